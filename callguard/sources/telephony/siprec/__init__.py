"""SIPREC (RFC 7866, RFC 9806): a session recording server that takes the calls an SBC or PBX forks.

`SiprecListener(config.serve.siprec)` is the host's `Listener`; the modules below it each read one
part of the wire: `body` the multipart INVITE, `sdp` the offer and answer, `metadata` the RFC 7865
XML, `rtp` the packets, `jitter` their order, `playout` their time, `codecs` their payloads.
"""

from callguard.sources.telephony.siprec.listener import SiprecListener

__all__ = ["SiprecListener"]
