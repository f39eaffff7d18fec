"""CP strategies, one module each: the module's Strategy subclass whose `name` is the module's
name is the strategy (lcab.cp.registry), its options are lcab/conf/cp/<name>.yaml."""
