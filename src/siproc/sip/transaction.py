"""SIP transactions: the four state machines of RFC 3261 section 17, with RFC 6026's fixes.

Theory of operation
-------------------
A transaction is one request and its responses (RFC 3261 section 17). It makes an unreliable
transport reliable enough: the client side retransmits the request (Timers A and E), the server
side retransmits its final response to INVITE (Timer G) and absorbs retransmitted requests, and
both sides linger after the final response so that late retransmissions are still recognised
(Timers D, I, J, K and RFC 6026's L and M).

Everything here is sans-I/O (DESIGN.md section 1, rule 1). Each machine is a plain object fed
with parsed messages and the current time `now` (seconds, any epoch); every entry point returns
a list of outputs, in order: `Send` (bytes for the transport: serialized once and the very same
bytes reused for each retransmission) and small frozen events for the transaction user (TU).
The edge keeps one timer handle per owner and re-arms it with `next_deadline()` after each call;
when it fires, `handle_timer(now)` fires every timer that is due, in time order.

Timers live in a small dict, name (the RFC letter) -> absolute deadline. A retransmission timer
that fires re-arms from its own scheduled time, not from `now`, so retransmissions do not drift
when the edge wakes late; if the edge is so late that the next one would already be due, it
re-arms from `now` instead of sending a burst. A zero-length timer (Timers D, I, J, K on a
reliable transport) is due at once: the next `handle_timer(now)` fires it.

Each class keeps its legal transitions in one table, `_TRANSITIONS`, checked by the single
`_set_state()`, which logs `old -> new` with the branch; an illegal transition is a bug in
siproc and raises `LocalProtocolError`, as does misuse such as sending a second final response.
What the peer sends never raises here: a stray or late response or request is absorbed.

Transactions are matched by key (RFC 3261 sections 17.1.3 and 17.2.3): `client_key()` for
responses, `server_key()` for requests, the latter with the RFC 2543 fallback for requests whose
branch lacks the magic cookie (RFC 4475 section 3.2.1). The endpoint owns the tables.

Following RFC 6026, a 2xx to INVITE moves both INVITE machines to Accepted instead of
Terminated: the client passes every 2xx retransmission up (the dialog ACKs each one) until
Timer M, and the server absorbs retransmitted INVITEs until Timer L while the TU itself
retransmits the 2xx (RFC 3261 section 13.3.1.4) and may send it through `respond()`.
"""

from siproc.sip.client_transaction import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    create_client_transaction,
)
from siproc.sip.server_transaction import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    create_server_transaction,
)
from siproc.sip.transaction_common import (
    DEFAULT_TIMERS,
    AckReceived,
    AckToTU,
    Destination,
    Output,
    ResponseReceived,
    Send,
    Timers,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    client_key,
    has_rfc3261_branch,
    make_ack_for_non_2xx,
    server_key,
)

__all__ = [
    "DEFAULT_TIMERS",
    "AckReceived",
    "AckToTU",
    "ClientTransaction",
    "Destination",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Output",
    "ResponseReceived",
    "Send",
    "ServerTransaction",
    "Timers",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "client_key",
    "create_client_transaction",
    "create_server_transaction",
    "has_rfc3261_branch",
    "make_ack_for_non_2xx",
    "server_key",
]
