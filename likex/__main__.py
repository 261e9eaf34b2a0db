from likex.cli import main

raise SystemExit(main())
