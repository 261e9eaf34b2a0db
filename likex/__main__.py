from likex.cli import entry

entry()
