"""`python -m medrobotics` runs the command line."""

from medrobotics.cli import main

main()
