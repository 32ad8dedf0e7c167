"""ngxlab.lab: the instruments (not mirrors of nginx).

Pythonic, keyword arguments, exceptions instead of return codes:

- ``Master``, ``MasterProcess``, ``Nginx``: three runners with one
  vocabulary (``slots``, ``workers``, ``master_pid``, ``wait_mesh``,
  ``kill_worker``, ``signal``, ``census``, ``stop``) — ``ngxlab.lab.runner``
- ``Master``: be nginx's master in this process (spawn workers, look at the
  mesh, send commands, tear down) — ``ngxlab.lab.master``
- ``MasterProcess``: run ``ngxlab run`` as its own process and poke it like
  an operator pokes nginx — ``ngxlab.lab.run``
- ``run_in_child``, ``forked``: fork safely from a notebook cell —
  ``ngxlab.lab.fork``
- ``census``, ``census_master``: every descriptor of a set of processes,
  channel pairs matched and labelled by slot — ``ngxlab.lab.census``
- ``Nginx``: a real nginx in a temporary prefix — ``ngxlab.lab.nginx``
- ``parse_strace``, ``ChannelMessage``, ``trace_run``: channel traffic as
  events, from nginx or ngxlab under strace — ``ngxlab.lab.trace``
- ``HandoffMaster``: workers that hand accepted connections to each other
  over the mesh (what nginx never does) — ``ngxlab.lab.handoff``
- ``bench``: what a message costs — ``ngxlab.lab.bench``
"""

import importlib

_exports = {
    "Runner": "runner", "Worker": "runner", "RunnerError": "runner",
    "Master": "master", "MasterError": "master",
    "MasterProcess": "run", "MasterProcessError": "run",
    "run_in_child": "fork", "forked": "fork", "ChildError": "fork",
    "census": "census", "census_master": "census", "Census": "census",
    "CensusError": "census",
    "Nginx": "nginx", "NginxError": "nginx", "NginxNotFound": "nginx",
    "parse_strace": "trace", "parse_trace": "trace", "ChannelMessage": "trace",
    "sequence": "trace", "diff_sequences": "trace", "trace_run": "trace",
    "record_channel": "trace",
    "HandoffMaster": "handoff",
}

__all__ = sorted(_exports)


def __getattr__(name):
    module = _exports.get(name)
    if module is None:
        raise AttributeError(f"module 'ngxlab.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ngxlab.lab.{module}"), name)


def __dir__():
    return sorted(list(globals()) + __all__)
