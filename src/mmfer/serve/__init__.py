"""Using a trained model: command-line prediction, model export and the local web demo."""
