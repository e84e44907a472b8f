"""Training one fold, and speaker-independent cross-validation over folds."""
