"""Make the tiny priors: ``python tools/pretrain_priors.py --output dcac_plugin/resources/priors``."""
from dcac_plugin.cli.pretrain_priors import main

if __name__ == "__main__":  # the VAE stage runs in a spawned process, which imports this file
    raise SystemExit(main())
