"""Analysis: plot functions (usable alone from Python or a notebook) and the HTML report built from them."""
