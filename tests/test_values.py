"""User values in the journal: which types round-trip, which are refused, which CBOR tags decode.

The rules are journal contract v1's (docs/journal-v1.md, "Values"): plain CBOR
plus the tags in ``ALLOWED_TAGS``; anything else is refused on the way in with
a :class:`durable.SerializationError` naming the type and where it sits, and
on the way out with a CBOR decode error (a journal is data, never code).
"""

from __future__ import annotations

import datetime
import decimal
import email.message
import fractions
import ipaddress
import math
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import durable
from durable._core.values import ALLOWED_TAGS, encode_call, encode_value
from durable.lowlevel import dumps_value, loads_value

# --- the allowed types round-trip ------------------------------------------

_MINUTES = 24 * 60 - 1
timezones = st.builds(
    datetime.timezone,
    st.integers(-_MINUTES, _MINUTES).map(lambda minutes: datetime.timedelta(minutes=minutes)),
)
aware_datetimes = st.datetimes(timezones=st.one_of(st.just(datetime.UTC), timezones))
hashable_scalars = st.one_of(st.integers(), st.text(max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**64 - 8, max_value=2**80) | st.integers(min_value=-(2**80), max_value=-(2**64)),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    aware_datetimes,
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.sets(hashable_scalars, max_size=4),
    st.frozensets(hashable_scalars, max_size=4),
    st.times(timezones=st.one_of(st.none(), st.just(datetime.UTC), timezones)),
    st.timedeltas(),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(decimal.Decimal),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.dictionaries(st.integers(), children, max_size=4),
    ),
    max_leaves=12,
)


def _same(sent: Any, got: Any) -> bool:
    """``got`` is ``sent`` as the journal gives it back: the same types, the same values."""
    if isinstance(sent, list | tuple):
        return type(got) is type(sent) and len(got) == len(sent) and all(map(_same, sent, got))
    if isinstance(sent, dict):
        return (
            type(got) is dict and list(got) == list(sent) and all(_same(sent[key], got[key]) for key in sent)
        )
    if isinstance(sent, set | frozenset):
        return type(got) is type(sent) and got == sent
    if isinstance(sent, decimal.Decimal) and sent.is_nan():
        return type(got) is decimal.Decimal and got.is_nan()
    if isinstance(sent, float):
        return type(got) is float and got == sent and math.copysign(1, got) == math.copysign(1, sent)
    if isinstance(sent, datetime.datetime):
        return type(got) is datetime.datetime and got == sent and got.utcoffset() == sent.utcoffset()
    return type(got) is type(sent) and got == sent


@given(values)
def test_allowed_values_round_trip(value: Any) -> None:
    assert _same(value, loads_value(dumps_value(value)))


@given(values)
def test_a_value_encodes_the_same_after_a_round_trip(value: Any) -> None:
    # Replay compares encoded arguments byte for byte, so equal values must encode equally.
    encoded = dumps_value(value)
    assert dumps_value(loads_value(encoded)) == encoded


@given(st.lists(st.integers(), max_size=5).map(tuple))
def test_tuples_come_back_as_tuples(value: tuple[int, ...]) -> None:
    got = loads_value(dumps_value(value))
    assert type(got) is tuple
    assert got == value


def test_nested_tuples_and_frozensets_come_back_as_tuples_and_frozensets() -> None:
    got = loads_value(dumps_value({"pair": (1, (2, 3)), "tags": frozenset({1}), "set": {2}}))
    assert got == {"pair": (1, (2, 3)), "tags": frozenset({1}), "set": {2}}
    assert [type(got[key]) for key in ("pair", "tags", "set")] == [tuple, frozenset, set]


def test_a_call_of_tuples_reads_the_same_as_one_journaled_when_tuples_were_lists() -> None:
    # A journal written before tuples stayed tuples holds [1, 2]; today's call is the
    # same call, not a divergence.
    from durable._core.values import encode_call, same_value  # noqa: PLC0415

    old = cbor2.dumps([[[1, 2], {"tags": [3]}], {}])
    assert same_value(old, encode_call(((1, 2), {"tags": (3,)}), {}, what="test"))
    assert not same_value(old, encode_call(((1, 3), {"tags": (3,)}), {}, what="test"))


def test_float_nan_comes_back_as_nan() -> None:
    assert math.isnan(loads_value(dumps_value(float("nan"))))


@pytest.mark.parametrize(
    "value",
    [datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(seconds=s))) for s in (30, 59)]
    + [datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(seconds=-30)))],
    ids=str,
)
def test_a_datetime_with_a_seconds_utc_offset_is_stored_readably_or_refused(value: datetime.datetime) -> None:
    # A value accepted on the way in must decode on the way out, or the journal holds a
    # step that can never be replayed.
    try:
        encoded = dumps_value(value)
    except durable.SerializationError:
        return
    assert _same(value, loads_value(encoded))


@pytest.mark.parametrize("text", ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"])
def test_a_non_finite_decimal_stays_that_decimal(text: str) -> None:
    # Turning a Decimal into a float silently would make `Decimal + result` raise on replay.
    value = decimal.Decimal(text)
    got = loads_value(dumps_value(value))
    assert type(got) is decimal.Decimal
    assert str(got) == str(value)
    assert str(got) == str(value)


_SET_ENCODING = (
    "from durable._core.values import encode_call;"
    "print(encode_call(({'alpha', 'beta', 'gamma', 'delta', 'epsilon'},), {}, what='x').hex())"
)


def test_a_set_of_strings_encodes_the_same_in_every_process() -> None:
    # Replay compares an activity's encoded arguments with the journal's, in a new process
    # after a crash; str hashes (so set order) differ between processes.
    encodings = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _SET_ENCODING], env=env, capture_output=True, text=True, check=True
        )
        encodings.add(out.stdout.strip())
    assert len(encodings) == 1, encodings


def test_call_arguments_encode_as_args_and_sorted_kwargs() -> None:
    assert loads_value(encode_call((1, "a"), {"b": 2, "a": 1}, what="x")) == [[1, "a"], {"a": 1, "b": 2}]
    assert encode_call((), {"b": 2, "a": 1}, what="x") == encode_call((), {"a": 1, "b": 2}, what="x")


# --- disallowed types are refused, naming the type and where it is ---------


class Opaque:
    """Some object the journal has no encoding for."""


def _message() -> email.message.Message:
    message = email.message.Message()
    message["Subject"] = "hi"
    return message


REFUSED = [
    pytest.param(fractions.Fraction(1, 3), "Fraction", id="Fraction"),
    pytest.param(re.compile("a+"), "Pattern", id="re.Pattern"),
    pytest.param(ipaddress.ip_address("10.0.0.1"), "IPv4Address", id="IPv4Address"),
    pytest.param(ipaddress.ip_address("::1"), "IPv6Address", id="IPv6Address"),
    pytest.param(ipaddress.ip_network("10.0.0.0/8"), "IPv4Network", id="IPv4Network"),
    pytest.param(ipaddress.ip_network("2001:db8::/32"), "IPv6Network", id="IPv6Network"),
    pytest.param(ipaddress.ip_interface("10.0.0.1/8"), "IPv4Interface", id="IPv4Interface"),
    pytest.param(ipaddress.ip_interface("::1/64"), "IPv6Interface", id="IPv6Interface"),
    pytest.param(datetime.datetime(2024, 5, 1, 12, 0), "datetime", id="naive-datetime"),
    pytest.param(Opaque(), "Opaque", id="object"),
    pytest.param(object(), "object", id="bare-object"),
    pytest.param(_message(), "Message", id="email.Message"),
    pytest.param(complex(1, 2), "complex", id="complex"),
    pytest.param(cbor2.CBORTag(35, "a+"), "CBORTag", id="CBORTag-35"),
    pytest.param(cbor2.CBORTag(9999, 1), "CBORTag", id="CBORTag-9999"),
]


@pytest.mark.parametrize(("value", "type_name"), REFUSED)
def test_a_disallowed_type_is_refused_with_its_type(value: Any, type_name: str) -> None:
    with pytest.raises(durable.SerializationError, match=rf"\bvalue has type {type_name}\b") as refused:
        dumps_value(value)
    assert "not a journal type" in str(refused.value)


@pytest.mark.parametrize(("value", "type_name"), REFUSED)
def test_a_disallowed_type_nested_in_lists_and_dicts_is_refused_with_its_path(
    value: Any, type_name: str
) -> None:
    nested = [1, {"order": {"items": ["ok", value]}}]
    with pytest.raises(durable.SerializationError) as refused:
        dumps_value(nested)
    assert f"value[1]['order']['items'][1] has type {type_name}" in str(refused.value)


def test_a_naive_datetime_is_refused_with_a_hint() -> None:
    with pytest.raises(durable.SerializationError, match="without a timezone"):
        dumps_value({"when": datetime.datetime(2024, 5, 1)})


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({fractions.Fraction(1, 2): "half"}, "value key Fraction(1, 2)"),
        ((1, (2, re.compile("x"))), "value[1][1]"),
        ({"k": {fractions.Fraction(1, 2)}}, "value['k'][0]"),
        ({1: [None, Opaque()]}, "value[1][1]"),
    ],
)
def test_the_path_names_dict_keys_tuples_and_sets(value: Any, path: str) -> None:
    with pytest.raises(durable.SerializationError, match=re.escape(f"{path} has type")):
        dumps_value(value)


def test_an_activity_argument_of_a_disallowed_type_is_refused_when_the_command_is_built() -> None:
    @durable.activity(name="test_values.store")
    def store(a: Any, b: Any, *, c: Any = None) -> None:
        raise AssertionError("never runs")

    with pytest.raises(durable.SerializationError) as refused:
        store(1, fractions.Fraction(1, 3))
    message = str(refused.value)
    assert "argument 2 of activity 'test_values.store'" in message
    assert "Fraction" in message
    with pytest.raises(durable.SerializationError, match=r"argument c= of activity .*has type Pattern"):
        store(1, 2, c=[re.compile("x")])


def test_a_result_of_a_disallowed_type_names_what_it_is() -> None:
    with pytest.raises(durable.SerializationError) as refused:
        encode_value({"rate": fractions.Fraction(1, 3)}, what="the result of activity 'quote'")
    message = str(refused.value)
    assert message.startswith("the result of activity 'quote' cannot be stored in the journal")
    assert "value['rate'] has type Fraction" in message


# --- decoding accepts only the allowed tags --------------------------------


def test_the_allowed_tags_are_those_of_contract_v1() -> None:
    assert set(ALLOWED_TAGS) == {0, 1, 2, 3, 4, 37, 100, 258, 1004}


ALLOWED_EXAMPLES = [
    # (tag, hand-made CBOR, the Python value it decodes to)
    (
        0,
        "c074323032342d30352d30315431323a30303a30305a",
        datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC),
    ),
    (1, "c11a66322ec0", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
    (2, "c249010000000000000000", 2**64),
    (3, "c349010000000000000000", -(2**64) - 1),
    (4, "c48221196ab3", decimal.Decimal("273.15")),
    (37, "d8255012345678123456781234567812345678", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    (100, "d864194d84", datetime.date(2024, 5, 1)),
    (258, "d9010283010203", {1, 2, 3}),
    (1004, "d903ec6a323032342d30352d3031", datetime.date(2024, 5, 1)),
]


@pytest.mark.parametrize(("tag", "hex_bytes", "expected"), ALLOWED_EXAMPLES, ids=lambda x: str(x))
def test_each_allowed_tag_decodes_to_its_type(tag: int, hex_bytes: str, expected: Any) -> None:
    got = loads_value(bytes.fromhex(hex_bytes))
    assert type(got) is type(expected)
    assert got == expected


REFUSED_TAGS = [
    pytest.param("d82362612b", id="35-regex"),
    pytest.param("d81e820103", id="30-rational"),
    pytest.param("d9d9f701", id="55799-self-describe"),
    pytest.param("d9270f01", id="9999-unknown"),
    pytest.param("da0001000001", id="65536-unknown"),
    pytest.param("db000000010000000001", id="2**32-unknown"),
    pytest.param("c582200f", id="5-bigfloat"),
    pytest.param("d81c8101", id="28-shareable"),
    pytest.param("d81c81d81d00", id="29-shared-ref"),
    pytest.param("d901008263616263d81900", id="256-25-string-refs"),
    pytest.param("d8246568656c6c6f", id="36-mime"),
    pytest.param("d8344401020304", id="52-ipv4"),
    pytest.param("d8365000000000000000000000000000000001", id="54-ipv6"),
    pytest.param("d9010444c0a80001", id="260-network-address"),
    pytest.param("d90105a144c0a800001818", id="261-network-prefix"),
    pytest.param("d9a7f882f93c00f94000", id="43000-complex"),
    pytest.param("d90103a10102", id="259-map"),
    pytest.param("d820781868747470733a2f2f6578616d706c652e636f6d2f3f613d31", id="32-uri"),
]


@pytest.mark.parametrize("hex_bytes", REFUSED_TAGS)
def test_a_tag_outside_the_allowed_set_is_refused(hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    cbor2.loads(data)  # well-formed CBOR, which a general decoder accepts: the tag is the only problem
    with pytest.raises(cbor2.CBORDecodeError):
        loads_value(data)


@pytest.mark.parametrize(("tag", "hex_bytes"), [(35, "d82362612b"), (9999, "d9270f01")])
def test_refusing_a_tag_says_why(tag: int, hex_bytes: str) -> None:
    with pytest.raises(cbor2.CBORDecodeError, match=rf"tag {tag} is not allowed in a durable journal"):
        loads_value(bytes.fromhex(hex_bytes))


@pytest.mark.parametrize("hex_bytes", REFUSED_TAGS)
def test_a_refused_tag_is_refused_when_nested_too(hex_bytes: str) -> None:
    nested = (
        bytes.fromhex("82a1616b81") + bytes.fromhex(hex_bytes) + bytes.fromhex("f6")
    )  # [{"k": [tag]}, null]
    with pytest.raises(cbor2.CBORDecodeError):
        loads_value(nested)


@given(
    st.integers(min_value=0, max_value=2**64 - 1).filter(lambda tag: tag not in ALLOWED_TAGS), st.integers()
)
def test_any_tag_outside_the_allowed_set_is_refused(tag: int, content: int) -> None:
    with pytest.raises(cbor2.CBORDecodeError):
        loads_value(cbor2.dumps(cbor2.CBORTag(tag, content)))
