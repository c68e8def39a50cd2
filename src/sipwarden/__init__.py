"""sipwarden: SIP network security for operators (GSMA FS.38).

Only the version lives here: importing :mod:`sipwarden` must stay cheap for the CLI.
"""

__version__ = "0.1.0"
