"""Normalise-then-hash rules of customer-match identifiers, table-driven."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from composable_dagster.destinations.pii import (
    HASHED_FIELDS,
    apply_pii,
    hash_email,
    hash_phone,
    is_sha256_hex,
    normalize_email,
    normalize_phone,
    sha256_hex,
)

DIGEST = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"  # test@example.com


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("test@example.com", "test@example.com"),
        ("John.Doe@Example.COM", "john.doe@example.com"),
        ("  john@example.com\t\n", "john@example.com"),
        ("J.o.h.n@gmail.com", "john@gmail.com"),
        ("John.Doe@GMAIL.com", "johndoe@gmail.com"),
        ("jo.hn@googlemail.com", "john@googlemail.com"),
        # Google documents only the removal of periods; a +tag is kept.
        ("john.doe+news@gmail.com", "johndoe+news@gmail.com"),
        ("john.doe+news@example.com", "john.doe+news@example.com"),
        ("a.b@sub.gmail.com", "a.b@sub.gmail.com"),
        ("a.b@gmail.com.au", "a.b@gmail.com.au"),
        ("first.last@outlook.com", "first.last@outlook.com"),
        ("\u00a0a.b@gmail.com\u200b", "ab@gmail.com"),
        ("\u3000Mail@Example.org\ufeff", "mail@example.org"),
        ("ÉLODIE.Dupont@Exemple.fr", "élodie.dupont@exemple.fr"),
        ("\uff34\uff25\uff33\uff34@example.com", "test@example.com"),  # full-width (NFKC)
        ("no-at-sign", "no-at-sign"),
        ("", None),
        ("   ", None),
        ("\u200b", None),
    ],
)
def test_normalize_email(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "default_country", "expected"),
    [
        ("+1 (415) 555-0123", None, "+14155550123"),
        ("+14155550123", None, "+14155550123"),
        ("+44 (0)20 7946 0958", None, "+442079460958"),
        ("0044 20 7946 0958", None, "+442079460958"),
        ("+49.30.1234567", None, "+49301234567"),
        ("+33 6/12/34/56/78", None, "+33612345678"),
        ("14155550123", None, "+14155550123"),
        ("\u00a0+33 6 12 34 56 78\u200b", None, "+33612345678"),
        (
            "\uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff10\uff11\uff12\uff13",
            None,
            "+14155550123",
        ),  # full-width plus and digits
        ("020 7946 0958", None, None),  # national number, country unknown
        ("020 7946 0958", "44", "+442079460958"),
        ("020 7946 0958", "+44", "+442079460958"),
        ("4155550123", "1", "+14155550123"),
        ("+44 20 7946 0958", "1", "+442079460958"),  # explicit country wins
        ("0049 30 1234567", "1", "+49301234567"),
        ("+1 415 555 0123 ext 4", None, None),
        ("call me maybe", None, None),
        ("+123", None, None),  # too short
        ("+1234567890123456", None, None),  # 16 digits: longer than E.164 allows
        ("+0123456789", None, None),  # country codes never start with 0
        ("+٤١٥٥٥٥٠١٢٣", None, None),  # Arabic-Indic digits are not E.164
        ("", None, None),
    ],
)
def test_normalize_phone(raw: str, default_country: str | None, expected: str | None) -> None:
    assert normalize_phone(raw, default_country_code=default_country) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (DIGEST, True),
        (DIGEST.upper(), True),
        (f"  {DIGEST}\n", True),
        (DIGEST[:-1], False),
        (DIGEST + "0", False),
        (DIGEST[:-1] + "g", False),
        ("test@example.com", False),
        ("", False),
    ],
)
def test_is_sha256_hex(value: str, expected: bool) -> None:
    assert is_sha256_hex(value) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("test@example.com", DIGEST),
        ("  TEST@Example.com ", DIGEST),
        (DIGEST, DIGEST),  # already hashed: never hashed twice
        (DIGEST.upper(), DIGEST),
        (f" {DIGEST} ", DIGEST),
        ("john.doe@gmail.com", hashlib.sha256(b"johndoe@gmail.com").hexdigest()),
        ("élodie@exemple.fr", hashlib.sha256("élodie@exemple.fr".encode()).hexdigest()),
        (None, None),
        ("  ", None),
    ],
)
def test_hash_email(raw: str | None, expected: str | None) -> None:
    assert hash_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (415) 555-0123", hashlib.sha256(b"+14155550123").hexdigest()),
        ("0044 20 7946 0958", hashlib.sha256(b"+442079460958").hexdigest()),
        (sha256_hex("+14155550123").upper(), sha256_hex("+14155550123")),
        ("not a phone", None),
        (None, None),
    ],
)
def test_hash_phone(raw: str | None, expected: str | None) -> None:
    assert hash_phone(raw) == expected


def test_sha256_hex_is_plain_sha256_of_utf8() -> None:
    assert sha256_hex("test@example.com") == DIGEST
    assert sha256_hex("é") == hashlib.sha256("é".encode()).hexdigest()


def test_hashed_field_names_map_to_their_kind() -> None:
    assert HASHED_FIELDS["hashedEmail"] == "email"
    assert HASHED_FIELDS["hashed_email"] == "email"
    assert HASHED_FIELDS["hashedPhoneNumber"] == "phone"
    assert HASHED_FIELDS["hashed_phone_number"] == "phone"
    assert "email" not in HASHED_FIELDS  # a plain field is never hashed implicitly


def test_apply_pii_hashes_only_the_named_columns_and_keeps_nulls() -> None:
    table = pa.table(
        {
            "hashedEmail": ["Test@Example.com", None, DIGEST.upper(), ""],
            "first_name": ["Ann", "Bo", None, "Cy"],
            "hashedPhoneNumber": pa.array([14155550123, None, 442079460958, 12], pa.int64()),
        }
    )
    out = apply_pii(table, {"hashedEmail": "email", "hashedPhoneNumber": "phone"})
    assert out.column_names == table.column_names
    assert out.schema.field("hashedPhoneNumber").type == pa.string()
    assert out.column("hashedEmail").to_pylist() == [DIGEST, None, DIGEST, None]
    assert out.column("first_name").to_pylist() == ["Ann", "Bo", None, "Cy"]
    assert out.column("hashedPhoneNumber").to_pylist() == [
        sha256_hex("+14155550123"),
        None,
        sha256_hex("+442079460958"),
        None,  # "12" cannot be E.164
    ]


def test_apply_pii_with_a_default_country_code() -> None:
    table = pa.table({"phone": ["020 7946 0958"]})
    out = apply_pii(table, {"phone": "phone"}, default_country_code="44")
    assert out.column("phone").to_pylist() == [sha256_hex("+442079460958")]


def test_apply_pii_names_a_missing_column() -> None:
    with pytest.raises(KeyError, match="hashedEmail"):
        apply_pii(pa.table({"email": ["a@b.c"]}), {"hashedEmail": "email"})
