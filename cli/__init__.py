"""The `glotta` command line: the top layer. One module per command group; each registers its subcommands."""
