"""Model versions from the user's side: importing their model, seeding one from a folder
of labeled images, and the operator's decisions (``activestream models ...``, ``activestream seed``)."""
