# mypy: ignore-errors
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class ConstraintSet(_message.Message):
    __slots__ = ("index_after", "index_not_after", "max_version_exclusive", "min_version", "permitted_dns_names", "sct_all_after_sec", "sct_not_after_sec", "validity_starts_after_sec", "validity_starts_not_after_sec")
    SCT_NOT_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    SCT_ALL_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    PERMITTED_DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INDEX_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    INDEX_AFTER_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_STARTS_NOT_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_STARTS_AFTER_SEC_FIELD_NUMBER: _ClassVar[int]
    sct_not_after_sec: int
    sct_all_after_sec: int
    min_version: str
    max_version_exclusive: str
    permitted_dns_names: _containers.RepeatedScalarFieldContainer[str]
    index_not_after: int
    index_after: int
    validity_starts_not_after_sec: int
    validity_starts_after_sec: int
    def __init__(self, sct_not_after_sec: int | None = ..., sct_all_after_sec: int | None = ..., min_version: str | None = ..., max_version_exclusive: str | None = ..., permitted_dns_names: _Iterable[str] | None = ..., index_not_after: int | None = ..., index_after: int | None = ..., validity_starts_not_after_sec: int | None = ..., validity_starts_after_sec: int | None = ...) -> None: ...

class TrustAnchor(_message.Message):
    __slots__ = ("constraints", "crs_root_id", "der", "display_name", "enforce_anchor_constraints", "enforce_anchor_expiry", "eutl", "ev_policy_oids", "sha256_hex", "tls_trust_anchor", "trust_anchor_id")
    DER_FIELD_NUMBER: _ClassVar[int]
    SHA256_HEX_FIELD_NUMBER: _ClassVar[int]
    EV_POLICY_OIDS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EUTL_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_ANCHOR_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_ANCHOR_CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    TLS_TRUST_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    TRUST_ANCHOR_ID_FIELD_NUMBER: _ClassVar[int]
    CRS_ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    der: bytes
    sha256_hex: str
    ev_policy_oids: _containers.RepeatedScalarFieldContainer[str]
    constraints: _containers.RepeatedCompositeFieldContainer[ConstraintSet]
    display_name: str
    eutl: bool
    enforce_anchor_expiry: bool
    enforce_anchor_constraints: bool
    tls_trust_anchor: bool
    trust_anchor_id: bytes
    crs_root_id: int
    def __init__(self, der: bytes | None = ..., sha256_hex: str | None = ..., ev_policy_oids: _Iterable[str] | None = ..., constraints: _Iterable[ConstraintSet | _Mapping] | None = ..., display_name: str | None = ..., eutl: bool | None = ..., enforce_anchor_expiry: bool | None = ..., enforce_anchor_constraints: bool | None = ..., tls_trust_anchor: bool | None = ..., trust_anchor_id: bytes | None = ..., crs_root_id: int | None = ...) -> None: ...

class MtcAnchor(_message.Message):
    __slots__ = ("constraints", "crs_root_id", "log_id", "tls_trust_anchor")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    TLS_TRUST_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    CRS_ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    log_id: bytes
    constraints: _containers.RepeatedCompositeFieldContainer[ConstraintSet]
    tls_trust_anchor: bool
    crs_root_id: int
    def __init__(self, log_id: bytes | None = ..., constraints: _Iterable[ConstraintSet | _Mapping] | None = ..., tls_trust_anchor: bool | None = ..., crs_root_id: int | None = ...) -> None: ...

class RootStore(_message.Message):
    __slots__ = ("additional_certs", "mtc_anchors", "trust_anchors", "version_major")
    TRUST_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    VERSION_MAJOR_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_CERTS_FIELD_NUMBER: _ClassVar[int]
    MTC_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    trust_anchors: _containers.RepeatedCompositeFieldContainer[TrustAnchor]
    version_major: int
    additional_certs: _containers.RepeatedCompositeFieldContainer[TrustAnchor]
    mtc_anchors: _containers.RepeatedCompositeFieldContainer[MtcAnchor]
    def __init__(self, trust_anchors: _Iterable[TrustAnchor | _Mapping] | None = ..., version_major: int | None = ..., additional_certs: _Iterable[TrustAnchor | _Mapping] | None = ..., mtc_anchors: _Iterable[MtcAnchor | _Mapping] | None = ...) -> None: ...

class TrustAnchorIdRange(_message.Message):
    __slots__ = ("base_id", "last_landmark_inclusive", "min_active_landmark_inclusive")
    BASE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_ACTIVE_LANDMARK_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_LANDMARK_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    base_id: bytes
    min_active_landmark_inclusive: int
    last_landmark_inclusive: int
    def __init__(self, base_id: bytes | None = ..., min_active_landmark_inclusive: int | None = ..., last_landmark_inclusive: int | None = ...) -> None: ...

class MtcSubTree(_message.Message):
    __slots__ = ("end_exclusive", "hash", "start_inclusive")
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    END_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    start_inclusive: int
    end_exclusive: int
    hash: bytes
    def __init__(self, start_inclusive: int | None = ..., end_exclusive: int | None = ..., hash: bytes | None = ...) -> None: ...

class MtcIndexRange(_message.Message):
    __slots__ = ("end_exclusive", "start_inclusive")
    START_INCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    END_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    start_inclusive: int
    end_exclusive: int
    def __init__(self, start_inclusive: int | None = ..., end_exclusive: int | None = ...) -> None: ...

class MtcAnchorData(_message.Message):
    __slots__ = ("log_id", "revoked_indices", "trusted_landmark_ids_range", "trusted_subtrees")
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_LANDMARK_IDS_RANGE_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_SUBTREES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_INDICES_FIELD_NUMBER: _ClassVar[int]
    log_id: bytes
    trusted_landmark_ids_range: TrustAnchorIdRange
    trusted_subtrees: _containers.RepeatedCompositeFieldContainer[MtcSubTree]
    revoked_indices: _containers.RepeatedCompositeFieldContainer[MtcIndexRange]
    def __init__(self, log_id: bytes | None = ..., trusted_landmark_ids_range: TrustAnchorIdRange | _Mapping | None = ..., trusted_subtrees: _Iterable[MtcSubTree | _Mapping] | None = ..., revoked_indices: _Iterable[MtcIndexRange | _Mapping] | None = ...) -> None: ...

class MtcMetadata(_message.Message):
    __slots__ = ("mtc_anchor_data", "update_time_seconds")
    UPDATE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MTC_ANCHOR_DATA_FIELD_NUMBER: _ClassVar[int]
    update_time_seconds: int
    mtc_anchor_data: _containers.RepeatedCompositeFieldContainer[MtcAnchorData]
    def __init__(self, update_time_seconds: int | None = ..., mtc_anchor_data: _Iterable[MtcAnchorData | _Mapping] | None = ...) -> None: ...
