"""The agented backend.

The Flask application factory is ``app.factory.create_app``. This package itself imports
nothing, so that ``import app.settings`` costs only the standard library: the Gunicorn master
and deployment tooling read the settings without loading Flask.
"""
