"""Analysis: verdicts against documented figures, gate thresholds, the history gate, cross-device claims."""
