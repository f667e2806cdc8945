"""Call audio forked by a phone system to a server (`callguard serve`): one module a protocol."""
