"""``python -m rmsprop_jax.demo``: see :mod:`rmsprop_jax.demo.cli`."""

from rmsprop_jax.demo.cli import main

raise SystemExit(main())
