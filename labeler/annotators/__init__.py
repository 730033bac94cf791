"""The annotators (LLMs through litellm, the embedded model, the classifier, recorded votes) and the run that asks them."""

import os

# litellm fetches its price list from GitHub when imported: a download at run time, and prices that change
# under a rerun. The list packaged with the installed litellm is used instead (a user may still say otherwise).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
