"""HTTP surface: the JSON API routers, problem+json errors, docs. Nothing imports this package
except the application factory and the command line."""
