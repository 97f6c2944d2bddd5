"""Built-in providers. Each imports only the core's provider interface and errors."""
