"""The suite's own etcd launcher: a first start whose chosen port was taken before etcd
could listen moves to other ports instead of failing the tests that need it."""

import socket

import cluster_lib
from conftest import ETCD


def test_a_first_start_moves_off_a_port_taken_meanwhile():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    etcd = cluster_lib.Etcd(ETCD)
    try:
        etcd.client_port = taken.getsockname()[1]
        etcd.start()
        assert etcd.client_port != taken.getsockname()[1]
        assert etcd._healthy()
        # a restart keeps its ports (clients know them)
        port = etcd.client_port
        etcd.restart()
        assert etcd.client_port == port and etcd._healthy()
    finally:
        taken.close()
        etcd.cleanup()
