"""Where each mirror's original lives in nginx (not a mirror itself).

``NGINX_SOURCES`` maps every public ``ngx_*`` name of ngxlab to the file and
line range of its definition in nginx at the pinned release, so a chapter,
the book's map, and the tests can link each mirror to the exact lines it
mirrors::

    >>> permalink("ngx_write_channel")
    'https://github.com/nginx/nginx/blob/release-1.30.4/src/os/unix/ngx_channel.c#L13-L92'

Ranges run from the return-type line (or ``typedef``/``struct`` line) to the
closing brace. Where nginx's name is a macro, the range is the function the
macro expands to on Linux (``ngx_add_event`` is ``ngx_epoll_add_event``).
"""

from __future__ import annotations

import importlib
import inspect

__all__ = ["NGINX_TAG", "NGINX_SOURCES", "permalink", "mirrors", "where"]

NGINX_TAG = "release-1.30.4"

_U = "src/os/unix/"
_C = "src/core/"
_E = "src/event/"

# name: (path, first line, last line, what the range is when not the name)
NGINX_SOURCES = {
    # src/core/ngx_log.[ch]
    "ngx_log_t": (_C + "ngx_log.h", 50, 76, "struct ngx_log_s"),
    "ngx_log_error": (_C + "ngx_log.c", 95, 210, "ngx_log_error_core"),
    "ngx_log_debug": (_C + "ngx_log.h", 94, 96, "the ngx_log_debug macro"),
    # src/os/unix/ngx_channel.[ch]
    "ngx_channel_t": (_U + "ngx_channel.h", 17, 22, None),
    "ngx_write_channel": (_U + "ngx_channel.c", 13, 92, None),
    "ngx_read_channel": (_U + "ngx_channel.c", 95, 195, None),
    "ngx_add_channel_event": (_U + "ngx_channel.c", 198, 240, None),
    "ngx_close_channel": (_U + "ngx_channel.c", 243, 253, None),
    # src/os/unix/ngx_process.[ch]
    "ngx_process_t": (_U + "ngx_process.h", 22, 36, None),
    "ngx_exec_ctx_t": (_U + "ngx_process.h", 39, 44, None),
    "ngx_signal_t": (_U + "ngx_process.c", 14, 19, None),
    "ngx_spawn_process": (_U + "ngx_process.c", 86, 258, None),
    "ngx_execute": (_U + "ngx_process.c", 261, 266, None),
    "ngx_execute_proc": (_U + "ngx_process.c", 269, 281, None),
    "ngx_init_signals": (_U + "ngx_process.c", 284, 315, None),
    "ngx_signal_handler": (_U + "ngx_process.c", 318, 467, None),
    "ngx_process_get_status": (_U + "ngx_process.c", 470, 561, None),
    "ngx_os_signal_process": (_U + "ngx_process.c", 631, 648, None),
    # src/os/unix/ngx_process_cycle.c
    "ngx_master_process_cycle": (_U + "ngx_process_cycle.c", 73, 275, None),
    "ngx_start_worker_processes": (_U + "ngx_process_cycle.c", 335, 349, None),
    "ngx_pass_open_channel": (_U + "ngx_process_cycle.c", 395, 428, None),
    "ngx_signal_worker_processes": (_U + "ngx_process_cycle.c", 431, 530,
                                    None),
    "ngx_reap_children": (_U + "ngx_process_cycle.c", 533, 652, None),
    "ngx_master_process_exit": (_U + "ngx_process_cycle.c", 655, 695, None),
    "ngx_worker_process_cycle": (_U + "ngx_process_cycle.c", 698, 749, None),
    "ngx_worker_process_init": (_U + "ngx_process_cycle.c", 752, 936, None),
    "ngx_worker_process_exit": (_U + "ngx_process_cycle.c", 939, 997, None),
    "ngx_channel_handler": (_U + "ngx_process_cycle.c", 1000, 1085, None),
    # src/os/unix/ngx_daemon.c, ngx_setproctitle.c
    "ngx_daemon": (_U + "ngx_daemon.c", 12, 71, None),
    "ngx_setproctitle": (_U + "ngx_setproctitle.c", 78, 133, None),
    # src/core/ngx_cycle.[ch]
    "ngx_cycle_t": (_C + "ngx_cycle.h", 39, 86, "struct ngx_cycle_s"),
    "ngx_core_conf_t": (_C + "ngx_cycle.h", 89, 122, None),
    "ngx_init_cycle": (_C + "ngx_cycle.c", 38, 952, None),
    "ngx_create_pidfile": (_C + "ngx_cycle.c", 1029, 1074, None),
    "ngx_delete_pidfile": (_C + "ngx_cycle.c", 1077, 1091, None),
    "ngx_signal_process": (_C + "ngx_cycle.c", 1094, 1145, None),
    "ngx_reopen_files": (_C + "ngx_cycle.c", 1179, 1300, None),
    # src/core/nginx.c
    "ngx_add_inherited_sockets": (_C + "nginx.c", 459, 516, None),
    "ngx_exec_new_binary": (_C + "nginx.c", 697, 798, None),
    # src/core/ngx_connection.[ch]
    "ngx_listening_t": (_C + "ngx_connection.h", 18, 95,
                        "struct ngx_listening_s"),
    "ngx_connection_t": (_C + "ngx_connection.h", 127, 206,
                         "struct ngx_connection_s"),
    "ngx_create_listening": (_C + "ngx_connection.c", 19, 95, None),
    "ngx_set_inherited_sockets": (_C + "ngx_connection.c", 134, 422, None),
    "ngx_open_listening_sockets": (_C + "ngx_connection.c", 425, 740, None),
    "ngx_close_listening_sockets": (_C + "ngx_connection.c", 1127, 1203,
                                    None),
    "ngx_get_connection": (_C + "ngx_connection.c", 1206, 1269, None),
    "ngx_free_connection": (_C + "ngx_connection.c", 1272, 1282, None),
    "ngx_close_connection": (_C + "ngx_connection.c", 1285, 1370, None),
    # src/event/
    "ngx_event_t": (_E + "ngx_event.h", 30, 138, "struct ngx_event_s"),
    "ngx_process_events_and_timers": (_E + "ngx_event.c", 194, 264, None),
    "ngx_event_process_init": (_E + "ngx_event.c", 635, 948, None),
    "ngx_event_no_timers_left": (_E + "ngx_event_timer.c", 99, 126, None),
    "ngx_add_event": (_E + "modules/ngx_epoll_module.c", 578, 639,
                      "ngx_epoll_add_event"),
    "ngx_del_event": (_E + "modules/ngx_epoll_module.c", 642, 697,
                      "ngx_epoll_del_event"),
    "ngx_add_timer": (_E + "ngx_event_timer.h", 50, 87,
                      "ngx_event_add_timer"),
    "ngx_del_timer": (_E + "ngx_event_timer.h", 31, 47,
                      "ngx_event_del_timer"),
}

_MODULES = ("core", "channel", "process", "process_cycle", "event",
            "connection", "cycle", "nginx", "daemon", "setproctitle")


def permalink(name: str) -> str:
    """The GitHub permalink to ``name``'s lines at the pinned release."""
    try:
        path, first, last, _ = NGINX_SOURCES[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a mirrored nginx name") from None
    return (f"https://github.com/nginx/nginx/blob/{NGINX_TAG}/{path}"
            f"#L{first}-L{last}")


def where(name: str) -> str:
    """``"src/os/unix/ngx_channel.c L13-L92"``."""
    path, first, last, what = NGINX_SOURCES[name]
    return f"{path} L{first}-L{last}" + (f" ({what})" if what else "")


def mirrors() -> dict[str, str]:
    """Every public ``ngx_*`` function and class of ngxlab: name -> module."""
    found = {}
    for mod in _MODULES:
        m = importlib.import_module(f"ngxlab.{mod}")
        for name, obj in vars(m).items():
            if not name.startswith("ngx_"):
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != m.__name__:
                continue
            found[name] = m.__name__
    return found
