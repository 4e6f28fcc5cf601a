"""Task introspection: get_current_task, get_running_tasks, task ids, names and parents."""

import braid
from braid import TaskInfo


def test_the_main_task_is_named_after_the_function_and_has_no_parent():
    async def main():
        await braid.checkpoint()
        return braid.get_current_task()

    info = braid.run(main)
    assert isinstance(info, TaskInfo)
    assert isinstance(info.id, int) and info.id > 0
    assert info.parent_id is None
    assert info.name == main.__qualname__


async def test_get_current_task_is_stable_within_a_task():
    a = braid.get_current_task()
    await braid.sleep(0)
    b = braid.get_current_task()
    assert a == b and a.id == b.id and hash(a) == hash(b)
    assert len({a, b}) == 1


async def test_child_tasks_have_distinct_ids_and_the_group_host_as_parent():
    me = braid.get_current_task()
    infos = []

    async def child():
        infos.append(braid.get_current_task())

    async with braid.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(child)
    assert len({i.id for i in infos}) == 3
    assert me.id not in {i.id for i in infos}
    assert all(i.parent_id == me.id for i in infos)


async def test_a_task_spawned_by_a_child_into_an_outer_group_has_the_host_as_parent():
    # AnyIO: the parent of a task started with start_soon is the task that opened the group
    me = braid.get_current_task()
    infos = {}

    async def grandchild():
        infos["grandchild"] = braid.get_current_task()

    async def child(tg):
        infos["child"] = braid.get_current_task()
        tg.start_soon(grandchild)

    async with braid.create_task_group() as tg:
        tg.start_soon(child, tg)
    assert infos["child"].parent_id == me.id
    assert infos["grandchild"].parent_id == me.id


async def test_a_task_in_a_group_opened_by_a_child_has_that_child_as_parent():
    infos = {}

    async def grandchild():
        infos["grandchild"] = braid.get_current_task()

    async def child():
        infos["child"] = braid.get_current_task()
        async with braid.create_task_group() as tg:
            tg.start_soon(grandchild)

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
    assert infos["grandchild"].parent_id == infos["child"].id


async def test_started_task_has_the_caller_as_parent():
    me = braid.get_current_task()
    infos = []

    async def child(*, task_status):
        infos.append(braid.get_current_task())
        task_status.started()

    async with braid.create_task_group() as tg:
        await tg.start(child)
    assert infos[0].parent_id == me.id
    assert infos[0].id != me.id


async def _named_child(out):
    out.append(braid.get_current_task().name)


async def test_default_task_name_is_the_module_and_qualified_name_of_the_function():
    names = []

    async def local_child():
        names.append(braid.get_current_task().name)

    async def local_starter(*, task_status):
        names.append(braid.get_current_task().name)
        task_status.started()

    async with braid.create_task_group() as tg:
        tg.start_soon(_named_child, names)
        tg.start_soon(local_child)
        await braid.checkpoint()
        await tg.start(local_starter)
    assert names == [
        f"{__name__}._named_child",
        f"{__name__}.{local_child.__qualname__}",
        f"{__name__}.{local_starter.__qualname__}",
    ]


async def test_explicit_task_names_are_converted_to_str():
    names = []

    async def starter(*, task_status):
        names.append(braid.get_current_task().name)
        task_status.started()

    async with braid.create_task_group() as tg:
        tg.start_soon(_named_child, names, name="explicit")
        await braid.checkpoint()
        tg.start_soon(_named_child, names, name=42)
        await braid.checkpoint()
        await tg.start(starter, name=("a", 1))
    assert names == ["explicit", "42", "('a', 1)"]


async def test_task_info_coro_is_the_tasks_coroutine():
    seen = []

    async def child():
        seen.append(braid.get_current_task().coro)

    async with braid.create_task_group() as tg:
        tg.start_soon(child)
    assert seen[0].cr_code is child.__code__


async def test_get_running_tasks_lists_the_live_tasks(virtual_clock):
    me = braid.get_current_task()
    children = []

    async def child(n):
        children.append(braid.get_current_task())
        await braid.sleep(n)

    async with braid.create_task_group() as tg:
        tg.start_soon(child, 1, name="one")
        tg.start_soon(child, 2, name="two")
        await braid.checkpoint()
        running = braid.get_running_tasks()
        assert all(isinstance(t, TaskInfo) for t in running)
        assert me in running
        assert set(children) <= set(running)
        by_id = {t.id: t for t in running}
        assert {by_id[c.id].name for c in children} == {"one", "two"}
        assert all(by_id[c.id].parent_id == me.id for c in children)

        await braid.sleep(1.5)  # "one" has finished
        ids = {t.id for t in braid.get_running_tasks()}
        one = next(c for c in children if c.name == "one")
        two = next(c for c in children if c.name == "two")
        assert one.id not in ids and two.id in ids and me.id in ids
    ids = {t.id for t in braid.get_running_tasks()}
    assert not ids & {c.id for c in children}
    assert me.id in ids


def test_task_ids_are_never_reused_across_runs():
    async def main():
        ids = [braid.get_current_task().id]

        async def child():
            ids.append(braid.get_current_task().id)

        async with braid.create_task_group() as tg:
            tg.start_soon(child)
        return ids

    first = braid.run(main)
    second = braid.run(main)
    assert len(set(first + second)) == 4


def test_get_running_tasks_of_a_run_is_just_its_main_task_at_the_start():
    async def main():
        return braid.get_running_tasks(), braid.get_current_task()

    running, me = braid.run(main)
    assert running == [me]


async def test_a_spawned_task_is_listed_before_it_first_runs():
    # as in AnyIO: start_soon makes the task visible at once, with its default
    # name (module.qualname of the function) and its parent
    async def child():
        await braid.sleep(0)

    me = braid.get_current_task()
    async with braid.create_task_group() as tg:
        tg.start_soon(child)
        listed = [t for t in braid.get_running_tasks() if t.id != me.id]
        assert len(listed) == 1
        assert listed[0].name == f"{__name__}.{child.__qualname__}"
        assert listed[0].parent_id == me.id


async def test_a_started_task_moves_under_the_group_host_once_started():
    # AnyIO: before started() the parent is the task calling start(); after, the
    # task that opened the group the child moves into
    me = braid.get_current_task()
    seen = {}

    async def child(*, task_status):
        seen["before"] = braid.get_current_task().parent_id
        task_status.started()
        seen["after"] = braid.get_current_task().parent_id

    async def starter(tg):
        seen["starter"] = braid.get_current_task().id
        await tg.start(child)

    async with braid.create_task_group() as tg:
        async with braid.create_task_group() as inner:
            inner.start_soon(starter, tg)
    assert seen["before"] == seen["starter"] != me.id
    assert seen["after"] == me.id
