"""The annotators (LLMs through litellm, the embedded model, the classifier, recorded votes) and the run that asks them."""
