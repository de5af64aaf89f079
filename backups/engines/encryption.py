"""Encryption at rest with age, through pyrage (age's Python binding): streams both ways, never a plaintext file.

A dump is hashed as plaintext, encrypted to the recipients and hashed again as what is stored, in one pass
from the dump tool's pipe into its file. A stored file is decrypted the same way, as a stream, into
whatever consumes it (pg_restore's standard input, a scratch SQLite file), its plaintext hashed on the way.
Only public keys (recipients) are needed to back up; the identity (secret key) is read from its file only
to verify or restore.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyrage
from pyrage import ssh, x25519

from backups.engines.errors import BackupError
from backups.engines.files import CHUNK, HashingWriter

Recipient = x25519.Recipient | ssh.Recipient
AgeIdentity = x25519.Identity


class EncryptionError(BackupError):
    """A recipient or identity that cannot be used, or a stream that does not encrypt or decrypt."""


def parse_recipients(values: Sequence[str], *, variable: str = "BACKUP_AGE_RECIPIENTS") -> list[Recipient]:
    """The age recipients named by ``values``: age public keys (``age1…``) or SSH public keys.

    A secret key given by mistake is refused without being repeated in the message.
    """
    recipients: list[Recipient] = []
    for position, raw in enumerate(values, start=1):
        value = raw.strip()
        if not value:
            continue
        if value.upper().startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in value:
            raise EncryptionError(
                f"{variable}: item {position} is a secret key; only public keys (age1…) belong on the control plane"
            )
        try:
            if value.startswith("age1"):
                recipients.append(x25519.Recipient.from_str(value))
            elif value.startswith("ssh-"):
                recipients.append(ssh.Recipient.from_str(value))
            else:
                raise EncryptionError(f"{variable}: item {position} is not an age public key (age1…) or SSH public key")
        except pyrage.RecipientError as exc:
            message = f"{variable}: item {position} ({value[:12]}…) is not a valid recipient: {exc}"
            raise EncryptionError(message) from None
    return recipients


def read_identities(path: str | Path, *, variable: str = "BACKUP_AGE_IDENTITY_FILE") -> list[AgeIdentity]:
    """The age identities (``AGE-SECRET-KEY-1…`` lines; ``#`` comments) in the file ``path``.

    Errors name the file and the line, never a key.
    """
    if not path:
        raise EncryptionError(f"the backup is encrypted: set {variable} to the file of the age identity to decrypt it")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise EncryptionError(f"{variable} ({path}): cannot read the identity file: {reason}") from None
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            message = f"{variable} ({path}): line {number} is not an age identity (AGE-SECRET-KEY-1…)"
            raise EncryptionError(message) from None
    if not identities:
        raise EncryptionError(f"{variable} ({path}): the file holds no age identity")
    return identities


@dataclass
class Digests:
    """What one pass saw: the plaintext and what was stored (the ciphertext, or the plaintext again)."""

    plaintext_sha256: str
    plaintext_size: int
    stored_sha256: str
    stored_size: int


class HashingReader(io.RawIOBase):
    """A reader that hashes what is read through it (the plaintext on its way into the encryptor)."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        if not data:
            return 0
        buffer[: len(data)] = data
        self.digest.update(data)
        self.size += len(data)
        return len(data)


class _Writer(io.RawIOBase):
    """A file-like face for a ``write``-only sink, as pyrage writes to it."""

    def __init__(self, sink: HashingWriter) -> None:
        super().__init__()
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.sink.write(chunk)
        return len(chunk)


def _stream_error(exc: BaseException, doing: str) -> BackupError:
    """A failure inside pyrage (its own, or a read or write it made for us), as one readable line."""
    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, OSError):
        return BackupError(f"{doing} failed: {exc.strerror or exc}")
    return EncryptionError(f"{doing} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def write_stream(source: IO[bytes], handle: IO[bytes], recipients: Sequence[Recipient]) -> Digests:
    """Copy ``source`` into ``handle``, encrypted to ``recipients`` when there are any, hashing both sides."""
    plain = HashingReader(source)
    stored = HashingWriter(handle)
    if recipients:
        try:
            pyrage.encrypt_io(plain, _Writer(stored), list(recipients))  # type: ignore[arg-type]
        except (pyrage.EncryptError, OSError, ValueError) as exc:
            raise _stream_error(exc, "encrypting the dump") from None
        return Digests(plain.digest.hexdigest(), plain.size, stored.digest.hexdigest(), stored.size)
    while chunk := source.read(CHUNK):
        stored.write(chunk)
    digest = stored.digest.hexdigest()
    return Digests(digest, stored.size, digest, stored.size)


def read_plaintext(path: Path, identities: Sequence[AgeIdentity] | None, sink: IO[bytes]) -> tuple[str, int]:
    """Stream the stored file ``path`` into ``sink`` as plaintext (decrypted with ``identities`` when given).

    Returns the plaintext's sha256 and size. A wrong identity, a truncated or altered ciphertext fails
    here with an ``EncryptionError``; what ``sink`` received by then is to be thrown away by the caller.
    """
    out = HashingWriter(sink)
    with open(path, "rb") as handle:
        if identities is None:
            shutil.copyfileobj(handle, _Writer(out), CHUNK)
        else:
            try:
                pyrage.decrypt_io(handle, _Writer(out), list(identities))  # type: ignore[arg-type]
            except (pyrage.DecryptError, OSError, ValueError) as exc:
                raise _stream_error(exc, "decrypting the backup") from None
    return out.digest.hexdigest(), out.size


def check_plaintext(expected_sha256: str, expected_size: int | None, digest: tuple[str, int]) -> str:
    """Compare the plaintext seen while decrypting with the one recorded at backup time."""
    sha256, size = digest
    if expected_sha256 and (sha256 != expected_sha256 or (expected_size is not None and size != expected_size)):
        raise EncryptionError(
            f"the decrypted dump does not match the plaintext recorded at backup time: {size} bytes, sha256 "
            f"{sha256[:16]}…; recorded {expected_size} bytes, sha256 {expected_sha256[:16]}…"
        )
    return f"decrypted {size} bytes, sha256 {sha256[:16]}… as recorded at backup time"


@dataclass
class StoredDump:
    """A dump as stored: its file, and what turns it back into the plaintext checked at backup time."""

    path: Path
    identities: Sequence[AgeIdentity] | None = None  # None: stored as plaintext
    plaintext_sha256: str = ""
    plaintext_size: int | None = None

    @property
    def encrypted(self) -> bool:
        return self.identities is not None

    def feed(self, sink: IO[bytes]) -> tuple[str, int]:
        """Stream the plaintext into ``sink``; returns its sha256 and size (see ``check_plaintext``)."""
        return read_plaintext(self.path, self.identities, sink)

    def check(self, digest: tuple[str, int]) -> str:
        return check_plaintext(self.plaintext_sha256, self.plaintext_size, digest)
