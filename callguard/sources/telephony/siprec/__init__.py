"""SIPREC (RFC 7866, RFC 9806): a session recording server that takes the calls an SBC or PBX forks.

`listener(config)` is the host's factory (`callguard.sources.telephony.siprec:listener`); the modules
below each read one part of the wire: `body` the multipart INVITE, `sdp` the offer and answer,
`metadata` the RFC 7865 XML, `rtp` the packets, `jitter` their order, `playout` their time, `codecs`
their payloads; `media` runs a call's RTP and `listener` its SIP.
"""

from callguard.core.config import Config
from callguard.sources.telephony.siprec.listener import SiprecListener


def listener(config: Config) -> SiprecListener:
    """The listener [serve.siprec] describes; ConfigError names a bad setting."""
    return SiprecListener.from_config(config)


__all__ = ["SiprecListener", "listener"]
