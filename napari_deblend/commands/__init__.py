"""Sub-commands of the ``napari-deblend`` command line (one module each)."""
