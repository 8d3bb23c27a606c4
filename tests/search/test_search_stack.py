"""How the search side plugs into ``darkroom up`` and ``darkroom demo`` (no processes started here)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tools.demo import demo_query
from tools.embedded import Ports, Stack, StackError


def test_ports_gain_the_page_port_without_breaking_positional_use():
    assert Ports(1, 2, 3, 4, 5).web == 8080
    ports = Ports.free()
    assert len(set(vars(ports).values())) == 6


def test_a_busy_page_port_is_named_with_its_flag_only_when_the_indexer_runs(tmp_path):
    ports = Ports.free()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.web))
        busy.listen()
        Stack(tmp_path, tmp_path, ports, with_indexer=False)._check_ports_free()  # not ours: no complaint
        with pytest.raises(
            StackError, match=rf"port {ports.web} \(web\) is in use; pick another with --web-port"
        ):
            Stack(tmp_path, tmp_path, ports, with_indexer=True)._check_ports_free()


def test_stack_names_the_page_url_and_the_index_file(tmp_path):
    stack = Stack(tmp_path / "run", tmp_path, Ports.free(), file_roots=[Path("photos")], with_indexer=True)
    assert stack.web_url == f"http://127.0.0.1:{stack.ports.web}/"
    assert stack.index_db == (tmp_path / "run" / "index.sqlite").resolve()


def test_demo_searches_for_a_selective_pair_of_tags():
    photos = [["sky", "sea", "beach"], ["sky", "sea", "sunset", "beach"], ["sky", "snow"],
              ["sky", "sunset", "sea", "beach"], ["grass", "flower"], ["sky", "night", "moon"]]  # fmt: skip
    assert demo_query(photos) == "beach sea"  # "sky" is on 5 of 6 photos: it would pick out nothing
    assert demo_query([["a", "b"]]) == "a b" and demo_query([["a"]]) == "a" and demo_query([]) == "sea"
