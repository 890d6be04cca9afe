from dcac_plugin.cli.make_synthetic import cli

cli()
