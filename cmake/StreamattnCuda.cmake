# CUDA support (see issue: CUDA specialisations); nothing yet.
