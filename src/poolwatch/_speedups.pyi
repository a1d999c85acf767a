from typing import Any

AFTER: int
BEFORE: int
GUARD: int
RESULT: int
URLLIB3_CHECKOUT: int
SQLALCHEMY_GET: int
HTTPCORE_HANDLE: int
HTTPCORE_WAIT: int
SQLALCHEMY_CHECKOUT: int
SQLALCHEMY_CHECKIN: int

AVAILABLE: int

def capture(finder: Any, depth: int = 0, skip: int = 0, trusted: int = 0, /) -> Any: ...
def capture_at(finder: Any, frame: Any, /) -> Any: ...
def checkout(
    tracker: Any,
    pending: Any,
    seq: Any,
    finder: Any,
    pool: Any,
    key: int,
    connection: Any = None,
    site: Any = None,
    /,
) -> Any: ...
def forget() -> None: ...
def find_pool(pools: Any, obj: Any, /) -> Any: ...
def set_owner(pending: Any, record: Any, owner: Any, /) -> None: ...
def attach_response(record: Any, facts: Any, /) -> None: ...
def httpcore_responded(error: Any, state: tuple[Any, ...], call: Any, response: Any, /) -> None: ...
def checkout_of(
    tracker: Any, pending: Any, seq: Any, finder: Any, pools: Any, obj: Any, connection: Any, /
) -> Any: ...
def checkin_of(tracker: Any, pending: Any, pools: Any, obj: Any, connection: Any, /) -> Any: ...
def checkin(tracker: Any, pending: Any, pool: Any, key: int, how: str = "returned", /) -> Any: ...
def configure(
    task_pair: Any,
    unknown_pair: Any,
    lease_record: type,
    threads: dict[int, Any],
    current_thread: Any,
    task_name: Any,
    orphan_note: str,
    user_kind: int,
    loop_kind: int,
    pool_record: type,
    /,
) -> None: ...

class Hook:
    def __init__(
        self,
        mode: int,
        original: Any,
        slow: Any,
        error: Any,
        where: str,
        *,
        call: Any = None,
        bound: tuple[Any, ...] = (),
        miss: Any = None,
        first: int | str = 0,
        second: int | str = 1,
        attr: str | None = None,
        value: Any = None,
        state: tuple[Any, ...] | None = None,
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, owner: Any = None) -> Any: ...

class Call:
    record: Any
    site: Any
    wait: Any
    pool_request: Any
    connection: Any
    lease: Any
