"""One module per ``recon`` subcommand; see :mod:`recon.cli`."""
