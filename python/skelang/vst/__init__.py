"""VST: Video-to-Semantic-Tokens (LVLM-VAR): motion to discrete semantic action tokens."""
