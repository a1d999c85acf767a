import requests

import poolwatch
from poolwatch.testing import Downstream

poolwatch.instrument()  # every installed client library; the pytest plugin does this for you

with Downstream(load_balancer=True) as downstream:
    downstream.route("/permissions/alice", status=403, body="empty")
    url = downstream.url_for("/permissions/alice")
    session = requests.Session()

    def check_permission(url):
        response = session.get(url, stream=True)  # status read, body never: the leak
        return response.status_code == 200

    check_permission(url)
    for pool in poolwatch.pools():
        print(pool)  # <Pool urllib3 http://127.0.0.1:PORT [leased 1 | idle 0 | waiting 0 | max 10]>
        for lease in pool.leases:
            print(lease.describe())  # the line that took it, its age, thread, the 403 HTML page

    try:
        with poolwatch.no_leaks():
            check_permission(url)
    except poolwatch.LeakError as error:
        print(error)  # 1 connection leaked inside no_leaks(): ... in check_permission ...

    with poolwatch.no_leaks():
        with session.get(url, stream=True) as response:  # the fix
            assert response.status_code == 403
