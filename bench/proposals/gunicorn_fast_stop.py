
#
# Proposed addition to backend/gunicorn.conf.py (bench/crash.py --proposal appends it to a copy).
#
# Gunicorn's gevent worker looks at `alive` once a second: after SIGTERM it keeps accepting for up
# to a second, then checks once a second whether its requests are done. Under systemd, whatever the
# stopping workers take comes before RestartSec and the next start. This worker checks every 20 ms:
# it stops accepting at once and leaves as soon as its requests are answered (or at
# graceful_timeout), so that systemd can SIGTERM the whole group on a crash (KillMode=control-group)
# without delaying the restart, and requests in flight are answered instead of killed.
#

import functools as _functools
import time as _time

import gevent as _gevent
from gevent.pool import Pool as _Pool
from gevent.server import StreamServer as _StreamServer
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker


class FastStopGeventWorker(_GeventWorker):
    tick = 0.02

    def run(self):
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            server = _StreamServer(listener, handle=_functools.partial(self.handle, listener),
                                   spawn=_Pool(self.worker_connections))
            if self.cfg.workers > 1:
                server.max_accept = 1
            server.start()
            servers.append(server)
        last_notify = 0.0
        while self.alive:
            now = _time.monotonic()
            if now - last_notify >= 1.0:
                self.notify()
                last_notify = now
            _gevent.sleep(self.tick)
        for server in servers:
            server.close()  # stop accepting now
        deadline = _time.monotonic() + self.cfg.graceful_timeout
        while _time.monotonic() < deadline:
            if all(server.pool.free_count() == server.pool.size for server in servers):
                return
            _gevent.sleep(self.tick)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        for server in servers:
            server.stop(timeout=1)


worker_class = FastStopGeventWorker
