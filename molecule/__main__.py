from molecule.cli import app

app()
