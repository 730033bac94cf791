"""labeler: LLM-assisted labeling with measured quality and human fallback."""

import os

# litellm must never reach for the network for its price list, whoever imports it first.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
