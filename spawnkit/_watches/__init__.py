"""Built-in parent watches, one mechanism a module; each child half imports only the stdlib."""
