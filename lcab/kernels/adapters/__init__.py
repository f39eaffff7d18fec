"""Kernel adapters, one module each: the module's Kernel subclass whose `name` is the module's
name is the kernel (lcab.kernels.registry), its options are lcab/conf/kernel/<name>.yaml."""
