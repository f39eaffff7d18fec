"""lcab's Hydra configs (config.yaml and one folder per config group), shipped inside the package
so that `python -m lcab.run` and the `lcab` script find them from any directory and any install."""
