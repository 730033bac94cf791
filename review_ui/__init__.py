"""The review UI: reviewers confirm or correct what routing sends them; experts settle disagreements."""
