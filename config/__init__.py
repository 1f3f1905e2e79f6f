"""The foundation: the one Settings class, the template catalog and the version. Imports only domain."""
