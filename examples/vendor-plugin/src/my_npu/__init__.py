"""MyNPU support for chipfit: a target spec and a backend, registered through entry points."""
