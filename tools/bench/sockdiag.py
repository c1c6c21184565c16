"""Per-listener TCP queue lengths from the kernel (NETLINK_SOCK_DIAG), cheap enough to sample
every few milliseconds under load: for each listening socket on 127.0.0.1, the accept queue
(connections whose handshake is done, waiting for accept(): `ss -ltn`'s Recv-Q) and its limit
(the listen backlog capped by somaxconn: Send-Q), and the number of half-open connections
(SYN received, SYN-ACK sent, ACK awaited) per listening port. Linux only, standard library. Used by c2000_probe.py."""

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
TCP_SYN_RECV, TCP_LISTEN = 3, 10
# Replies are struct inet_diag_msg: family, state, timer, retrans (4 x u8), inet_diag_sockid
# (sport, dport: be16; src, dst: 16 bytes; if: u32; cookie: 2 x u32), then expires, rqueue,
# wqueue, uid, inode (u32).


class SockDiag:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self.seq = 0

    def close(self):
        self.sock.close()

    def _dump(self, states):
        self.seq += 1
        # struct inet_diag_req_v2: family, protocol, ext, pad (u8), states (u32), sockid (48)
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
        hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(hdr + req)
        while True:
            data = self.sock.recv(1 << 20)
            at = 0
            while at + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, at)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    raise OSError("sock_diag: netlink error")
                body = at + 16
                state = data[body + 1]
                sport = struct.unpack_from(">H", data, body + 4)[0]
                rqueue, wqueue = struct.unpack_from("=II", data, body + 4 + 48 + 4)
                yield state, sport, rqueue, wqueue
                at += (length + 3) & ~3

    def sample(self, half_open=False):
        """{port: [accept queue, accept queue limit, half-open]} of the listening sockets
        (ports shared by several SO_REUSEPORT sockets are summed). Listeners alone take
        ~0.3 ms; half_open=True also counts SYN_RECV entries, which walks the whole
        established hash (~7 ms here)."""
        out = {}
        states = (1 << TCP_LISTEN) | ((1 << TCP_SYN_RECV) if half_open else 0)
        for state, port, rq, wq in self._dump(states):
            entry = out.setdefault(port, [0, 0, 0])
            if state == TCP_LISTEN:
                entry[0] += rq
                entry[1] += wq
            else:
                entry[2] += 1
        return out
