from dcac_plugin.cli.make_synthetic import main

raise SystemExit(main())
