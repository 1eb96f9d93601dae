;; XXH3-128 (seed 0, default secret), written from xxHash's public specification (doc/xxhash_spec.md).
;; Built by packages/dedup/scripts/build-xxh3.mjs (wabt) into xxh3-wasm.js; run through xxh3.js.
;;
;; Export: xxh128(p, len, out) hashes the len bytes at p and stores the 16-byte canonical digest
;; (high half then low half, each big-endian: hash-wasm's 'binary' digest) at out. Imports: a
;; shared memory, and $secret: the address of the module's own bytes (the 192-byte secret, written
;; by every instantiation, always with the same bytes); xxh3.js puts them at the memory's end, so
;; buffers hashed in place start at offset 0, and each thread's out slot after the secret.
;; Inputs longer than 240 bytes take the SIMD path: 8 accumulators in 4 v128, one 64-byte stripe
;; per iteration, a scramble every 16 stripes, then the last 64 bytes.
(module
  (import "env" "memory" (memory 1 65536 shared))
  ;; where the module's own bytes start: the secret, then one 16-byte digest slot per thread
  (import "env" "secret" (global $secret i32))

  ;; the default 192-byte secret
  (data (global.get $secret)
    "\b8\fe\6c\39\23\a4\4b\be\7c\01\81\2c\f7\21\ad\1c"
    "\de\d4\6d\e9\83\90\97\db\72\40\a4\a4\b7\b3\67\1f"
    "\cb\79\e6\4e\cc\c0\e5\78\82\5a\d0\7d\cc\ff\72\21"
    "\b8\08\46\74\f7\43\24\8e\e0\35\90\e6\81\3a\26\4c"
    "\3c\28\52\bb\91\c3\00\cb\88\d0\65\8b\1b\53\2e\a3"
    "\71\64\48\97\a2\0d\f9\4e\38\19\ef\46\a9\de\ac\d8"
    "\a8\fa\76\3f\e3\9c\34\3f\f9\dc\bb\c7\c7\0b\4f\1d"
    "\8a\51\e0\4b\cd\b4\59\31\c8\9f\7e\c9\d9\78\73\64"
    "\ea\c5\ac\83\34\d3\eb\c3\c5\81\a0\ff\fa\13\63\eb"
    "\17\0d\dd\51\b7\f0\da\49\d3\16\55\26\29\d4\68\9e"
    "\2b\16\be\58\7d\47\a1\fc\8f\f8\b8\d1\7a\d0\31\ce"
    "\45\cb\3a\8f\95\16\04\28\af\d7\fb\ca\bb\4b\40\7e")

  ;; ---- 64-bit helpers ----

  ;; high 64 bits of the 128-bit product a*b, from 32-bit halves
  (func $mulhi (param $a i64) (param $b i64) (result i64)
    (local $al i64) (local $ah i64) (local $bl i64) (local $bh i64)
    (local $ll i64) (local $lh i64) (local $cross i64)
    (local.set $al (i64.and (local.get $a) (i64.const 0xffffffff)))
    (local.set $ah (i64.shr_u (local.get $a) (i64.const 32)))
    (local.set $bl (i64.and (local.get $b) (i64.const 0xffffffff)))
    (local.set $bh (i64.shr_u (local.get $b) (i64.const 32)))
    (local.set $ll (i64.mul (local.get $al) (local.get $bl)))
    (local.set $lh (i64.mul (local.get $al) (local.get $bh)))
    ;; (ll >> 32) + lo32(lh) + ah*bl never exceeds 2^64 - 1
    (local.set $cross
      (i64.add
        (i64.add (i64.shr_u (local.get $ll) (i64.const 32)) (i64.and (local.get $lh) (i64.const 0xffffffff)))
        (i64.mul (local.get $ah) (local.get $bl))))
    (i64.add
      (i64.add (i64.mul (local.get $ah) (local.get $bh)) (i64.shr_u (local.get $lh) (i64.const 32)))
      (i64.shr_u (local.get $cross) (i64.const 32))))

  ;; lo64(a*b) xor hi64(a*b)
  (func $fold (param $a i64) (param $b i64) (result i64)
    (i64.xor (i64.mul (local.get $a) (local.get $b)) (call $mulhi (local.get $a) (local.get $b))))

  (func $avalanche (param $x i64) (result i64)
    (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 37))))
    (local.set $x (i64.mul (local.get $x) (i64.const 0x165667919E3779F9)))
    (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 32))))

  (func $avalanche_xxh64 (param $x i64) (result i64)
    (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 33))))
    (local.set $x (i64.mul (local.get $x) (i64.const 0xC2B2AE3D27D4EB4F)))
    (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 29))))
    (local.set $x (i64.mul (local.get $x) (i64.const 0x165667B19E3779F9)))
    (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 32))))

  (func $bswap64 (param $x i64) (result i64)
    (i64x2.extract_lane 0
      (i8x16.shuffle 7 6 5 4 3 2 1 0 15 14 13 12 11 10 9 8
        (i64x2.splat (local.get $x)) (i64x2.splat (local.get $x)))))

  (func $bswap32 (param $x i32) (result i32)
    (i32x4.extract_lane 0
      (i8x16.shuffle 3 2 1 0 7 6 5 4 11 10 9 8 15 14 13 12
        (i32x4.splat (local.get $x)) (i32x4.splat (local.get $x)))))

  ;; the canonical digest: high half then low half, each big-endian
  (func $store (param $out i32) (param $lo i64) (param $hi i64)
    (i64.store (local.get $out) (call $bswap64 (local.get $hi)))
    (i64.store offset=8 (local.get $out) (call $bswap64 (local.get $lo))))

  ;; ---- 0 to 16 bytes ----

  (func $short (param $p i32) (param $len i32) (param $out i32)
    (local $combined i32) (local $v i64) (local $lo i64) (local $hi i64) (local $first i64) (local $last i64)
    (local $val2 i64)
    (if (i32.eqz (local.get $len))
      (then
        (call $store (local.get $out)
          (call $avalanche_xxh64 (i64.xor (i64.load offset=64 (global.get $secret)) (i64.load offset=72 (global.get $secret))))
          (call $avalanche_xxh64 (i64.xor (i64.load offset=80 (global.get $secret)) (i64.load offset=88 (global.get $secret)))))
        (return)))
    (if (i32.le_u (local.get $len) (i32.const 3))
      (then
        (local.set $combined
          (i32.or
            (i32.or
              (i32.load8_u (i32.sub (i32.add (local.get $p) (local.get $len)) (i32.const 1)))
              (i32.shl (local.get $len) (i32.const 8)))
            (i32.or
              (i32.shl (i32.load8_u (local.get $p)) (i32.const 16))
              (i32.shl (i32.load8_u (i32.add (local.get $p) (i32.shr_u (local.get $len) (i32.const 1)))) (i32.const 24)))))
        (call $store (local.get $out)
          (call $avalanche_xxh64
            (i64.xor
              (i64.extend_i32_u (i32.xor (i32.load offset=0 (global.get $secret)) (i32.load offset=4 (global.get $secret))))
              (i64.extend_i32_u (local.get $combined))))
          (call $avalanche_xxh64
            (i64.xor
              (i64.extend_i32_u (i32.xor (i32.load offset=8 (global.get $secret)) (i32.load offset=12 (global.get $secret))))
              (i64.extend_i32_u (i32.rotl (call $bswap32 (local.get $combined)) (i32.const 13))))))
        (return)))
    (if (i32.le_u (local.get $len) (i32.const 8))
      (then
        (local.set $v
          (i64.xor
            (i64.xor (i64.load offset=16 (global.get $secret)) (i64.load offset=24 (global.get $secret)))
            (i64.or
              (i64.load32_u (local.get $p))
              (i64.shl
                (i64.load32_u (i32.sub (i32.add (local.get $p) (local.get $len)) (i32.const 4)))
                (i64.const 32)))))
        (local.set $first
          (i64.add (i64.const 0x9E3779B185EBCA87) (i64.extend_i32_u (i32.shl (local.get $len) (i32.const 2)))))
        (local.set $lo (i64.mul (local.get $v) (local.get $first)))
        (local.set $hi (call $mulhi (local.get $v) (local.get $first)))
        (local.set $hi (i64.add (local.get $hi) (i64.shl (local.get $lo) (i64.const 1))))
        (local.set $lo (i64.xor (local.get $lo) (i64.shr_u (local.get $hi) (i64.const 3))))
        (local.set $lo (i64.xor (local.get $lo) (i64.shr_u (local.get $lo) (i64.const 35))))
        (local.set $lo (i64.mul (local.get $lo) (i64.const 0x9FB21C651E98DF25)))
        (local.set $lo (i64.xor (local.get $lo) (i64.shr_u (local.get $lo) (i64.const 28))))
        (call $store (local.get $out) (local.get $lo) (call $avalanche (local.get $hi)))
        (return)))
    ;; 9 to 16 bytes
    (local.set $first (i64.load (local.get $p)))
    (local.set $last (i64.load (i32.sub (i32.add (local.get $p) (local.get $len)) (i32.const 8))))
    (local.set $v
      (i64.xor
        (i64.xor (i64.load offset=32 (global.get $secret)) (i64.load offset=40 (global.get $secret)))
        (i64.xor (local.get $first) (local.get $last))))
    (local.set $val2 (i64.xor (i64.xor (i64.load offset=48 (global.get $secret)) (i64.load offset=56 (global.get $secret))) (local.get $last)))
    (local.set $lo
      (i64.add
        (i64.mul (local.get $v) (i64.const 0x9E3779B185EBCA87))
        (i64.shl (i64.extend_i32_u (i32.sub (local.get $len) (i32.const 1))) (i64.const 54))))
    (local.set $hi
      (i64.add
        (i64.add (call $mulhi (local.get $v) (i64.const 0x9E3779B185EBCA87)) (local.get $val2))
        (i64.mul (i64.and (local.get $val2) (i64.const 0xffffffff)) (i64.const 0x85EBCA76))))
    (local.set $lo (i64.xor (local.get $lo) (call $bswap64 (local.get $hi))))
    ;; {lo, hi} * PRIME64_2 (128 x 64 -> 128)
    (local.set $hi
      (i64.add
        (call $mulhi (local.get $lo) (i64.const 0xC2B2AE3D27D4EB4F))
        (i64.mul (local.get $hi) (i64.const 0xC2B2AE3D27D4EB4F))))
    (local.set $lo (i64.mul (local.get $lo) (i64.const 0xC2B2AE3D27D4EB4F)))
    (call $store (local.get $out) (call $avalanche (local.get $lo)) (call $avalanche (local.get $hi))))

  ;; ---- 17 to 240 bytes ----

  ;; one 16-byte chunk at $d mixed with the secret at offset $s
  (func $mix (param $d i32) (param $s i32) (result i64)
    (local.set $s (i32.add (global.get $secret) (local.get $s)))
    (call $fold
      (i64.xor (i64.load (local.get $d)) (i64.load (local.get $s)))
      (i64.xor (i64.load offset=8 (local.get $d)) (i64.load offset=8 (local.get $s)))))

  (func $mix_two (param $acc0 i64) (param $acc1 i64) (param $d1 i32) (param $d2 i32) (param $s i32)
    (result i64 i64)
    (i64.xor
      (i64.add (local.get $acc0) (call $mix (local.get $d1) (local.get $s)))
      (i64.add (i64.load (local.get $d2)) (i64.load offset=8 (local.get $d2))))
    (i64.xor
      (i64.add (local.get $acc1) (call $mix (local.get $d2) (i32.add (local.get $s) (i32.const 16))))
      (i64.add (i64.load (local.get $d1)) (i64.load offset=8 (local.get $d1)))))

  (func $medium (param $p i32) (param $len i32) (param $out i32)
    (local $acc0 i64) (local $acc1 i64) (local $i i32) (local $chunks i32) (local $l i64)
    (local.set $l (i64.extend_i32_u (local.get $len)))
    (local.set $acc0 (i64.mul (local.get $l) (i64.const 0x9E3779B185EBCA87)))
    (if (i32.le_u (local.get $len) (i32.const 128))
      (then
        ;; pairs of chunks from both ends, the innermost pair first
        (local.set $i (i32.shr_u (i32.sub (local.get $len) (i32.const 1)) (i32.const 5)))
        (loop $rounds
          (call $mix_two (local.get $acc0) (local.get $acc1)
            (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 4)))
            (i32.sub
              (i32.add (local.get $p) (local.get $len))
              (i32.add (i32.shl (local.get $i) (i32.const 4)) (i32.const 16)))
            (i32.shl (local.get $i) (i32.const 5)))
          (local.set $acc1)
          (local.set $acc0)
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $rounds (i32.ge_s (local.get $i) (i32.const 0)))))
      (else
        (local.set $chunks (i32.shr_u (local.get $len) (i32.const 5)))
        (loop $first
          (call $mix_two (local.get $acc0) (local.get $acc1)
            (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 5)))
            (i32.add (local.get $p) (i32.add (i32.shl (local.get $i) (i32.const 5)) (i32.const 16)))
            (i32.shl (local.get $i) (i32.const 5)))
          (local.set $acc1)
          (local.set $acc0)
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $first (i32.lt_u (local.get $i) (i32.const 4))))
        (local.set $acc0 (call $avalanche (local.get $acc0)))
        (local.set $acc1 (call $avalanche (local.get $acc1)))
        (block $done
          (loop $rest
            (br_if $done (i32.ge_u (local.get $i) (local.get $chunks)))
            (call $mix_two (local.get $acc0) (local.get $acc1)
              (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 5)))
              (i32.add (local.get $p) (i32.add (i32.shl (local.get $i) (i32.const 5)) (i32.const 16)))
              (i32.add (i32.shl (i32.sub (local.get $i) (i32.const 4)) (i32.const 5)) (i32.const 3)))
            (local.set $acc1)
            (local.set $acc0)
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $rest)))
        (call $mix_two (local.get $acc0) (local.get $acc1)
          (i32.sub (i32.add (local.get $p) (local.get $len)) (i32.const 16))
          (i32.sub (i32.add (local.get $p) (local.get $len)) (i32.const 32))
          (i32.const 103))
        (local.set $acc1)
        (local.set $acc0)))
    (call $store (local.get $out)
      (call $avalanche (i64.add (local.get $acc0) (local.get $acc1)))
      (i64.sub (i64.const 0)
        (call $avalanche
          (i64.add
            (i64.add
              (i64.mul (local.get $acc0) (i64.const 0x9E3779B185EBCA87))
              (i64.mul (local.get $acc1) (i64.const 0x85EBCA77C2B2AE63)))
            (i64.mul (local.get $l) (i64.const 0xC2B2AE3D27D4EB4F)))))))

  ;; ---- more than 240 bytes ----

  (func $merge (param $a0 v128) (param $a1 v128) (param $a2 v128) (param $a3 v128) (param $s i32) (param $start i64)
    (result i64)
    (local $x v128)
    (local.set $x (v128.xor (local.get $a0) (v128.load (local.get $s))))
    (local.set $start
      (i64.add (local.get $start)
        (call $fold (i64x2.extract_lane 0 (local.get $x)) (i64x2.extract_lane 1 (local.get $x)))))
    (local.set $x (v128.xor (local.get $a1) (v128.load offset=16 (local.get $s))))
    (local.set $start
      (i64.add (local.get $start)
        (call $fold (i64x2.extract_lane 0 (local.get $x)) (i64x2.extract_lane 1 (local.get $x)))))
    (local.set $x (v128.xor (local.get $a2) (v128.load offset=32 (local.get $s))))
    (local.set $start
      (i64.add (local.get $start)
        (call $fold (i64x2.extract_lane 0 (local.get $x)) (i64x2.extract_lane 1 (local.get $x)))))
    (local.set $x (v128.xor (local.get $a3) (v128.load offset=48 (local.get $s))))
    (local.set $start
      (i64.add (local.get $start)
        (call $fold (i64x2.extract_lane 0 (local.get $x)) (i64x2.extract_lane 1 (local.get $x)))))
    (call $avalanche (local.get $start)))

  (func $long (param $p i32) (param $len i32) (param $out i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $d0 v128) (local $d1 v128) (local $d2 v128) (local $d3 v128)
    (local $k0 v128) (local $k1 v128) (local $k2 v128) (local $k3 v128)
    (local $lo v128) (local $hi v128) (local $prime v128)
    (local $n i32) (local $k i32) (local $kend i32) (local $last i32) (local $end i32) (local $l i64)
    (local.set $k (global.get $secret))
    (local.set $kend (i32.add (global.get $secret) (i32.const 128)))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $a0 (v128.const i64x2 0xC2B2AE3D 0x9E3779B185EBCA87))
    (local.set $a1 (v128.const i64x2 0xC2B2AE3D27D4EB4F 0x165667B19E3779F9))
    (local.set $a2 (v128.const i64x2 0x85EBCA77C2B2AE63 0x85EBCA77))
    (local.set $a3 (v128.const i64x2 0x27D4EB2F165667C5 0x9E3779B1))
    (local.set $prime (i64x2.splat (i64.const 0x9E3779B1)))
    ;; every stripe but the last, with a scramble after each full block of 16; then the last 64 bytes
    (local.set $n (i32.shr_u (i32.sub (local.get $len) (i32.const 1)) (i32.const 6)))
    (block $done
      (loop $stripes
        (if (i32.eqz (local.get $n))
          (then
            (br_if $done (local.get $last))
            (local.set $last (i32.const 1))
            (local.set $n (i32.const 1))
            (local.set $p (i32.sub (local.get $end) (i32.const 64)))
            (local.set $k (i32.add (global.get $secret) (i32.const 121)))))
        (local.set $d0 (v128.load (local.get $p)))
        (local.set $d1 (v128.load offset=16 (local.get $p)))
        (local.set $d2 (v128.load offset=32 (local.get $p)))
        (local.set $d3 (v128.load offset=48 (local.get $p)))
        (local.set $k0 (v128.xor (local.get $d0) (v128.load (local.get $k))))
        (local.set $k1 (v128.xor (local.get $d1) (v128.load offset=16 (local.get $k))))
        (local.set $k2 (v128.xor (local.get $d2) (v128.load offset=32 (local.get $k))))
        (local.set $k3 (v128.xor (local.get $d3) (v128.load offset=48 (local.get $k))))
        ;; lo32 and hi32 of each 64-bit lane of two vectors, then 32x32->64 products
        (local.set $lo (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $k0) (local.get $k1)))
        (local.set $hi (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $k0) (local.get $k1)))
        (local.set $a0
          (i64x2.add
            (i64x2.add (local.get $a0) (i64x2.extmul_low_i32x4_u (local.get $lo) (local.get $hi)))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $d0) (local.get $d0))))
        (local.set $a1
          (i64x2.add
            (i64x2.add (local.get $a1) (i64x2.extmul_high_i32x4_u (local.get $lo) (local.get $hi)))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $d1) (local.get $d1))))
        (local.set $lo (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 (local.get $k2) (local.get $k3)))
        (local.set $hi (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 (local.get $k2) (local.get $k3)))
        (local.set $a2
          (i64x2.add
            (i64x2.add (local.get $a2) (i64x2.extmul_low_i32x4_u (local.get $lo) (local.get $hi)))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $d2) (local.get $d2))))
        (local.set $a3
          (i64x2.add
            (i64x2.add (local.get $a3) (i64x2.extmul_high_i32x4_u (local.get $lo) (local.get $hi)))
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $d3) (local.get $d3))))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (local.set $k (i32.add (local.get $k) (i32.const 8)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (if (i32.eq (local.get $k) (local.get $kend))
          (then
            (local.set $k (global.get $secret))
            (local.set $a0
              (i64x2.mul
                (v128.xor
                  (v128.xor (local.get $a0) (i64x2.shr_u (local.get $a0) (i32.const 47)))
                  (v128.load offset=128 (global.get $secret)))
                (local.get $prime)))
            (local.set $a1
              (i64x2.mul
                (v128.xor
                  (v128.xor (local.get $a1) (i64x2.shr_u (local.get $a1) (i32.const 47)))
                  (v128.load offset=144 (global.get $secret)))
                (local.get $prime)))
            (local.set $a2
              (i64x2.mul
                (v128.xor
                  (v128.xor (local.get $a2) (i64x2.shr_u (local.get $a2) (i32.const 47)))
                  (v128.load offset=160 (global.get $secret)))
                (local.get $prime)))
            (local.set $a3
              (i64x2.mul
                (v128.xor
                  (v128.xor (local.get $a3) (i64x2.shr_u (local.get $a3) (i32.const 47)))
                  (v128.load offset=176 (global.get $secret)))
                (local.get $prime)))))
        (br $stripes)))
    (local.set $l (i64.extend_i32_u (local.get $len)))
    (call $store (local.get $out)
      (call $merge (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3) (i32.add (global.get $secret) (i32.const 11))
        (i64.mul (local.get $l) (i64.const 0x9E3779B185EBCA87)))
      (call $merge (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3) (i32.add (global.get $secret) (i32.const 117))
        (i64.xor (i64.mul (local.get $l) (i64.const 0xC2B2AE3D27D4EB4F)) (i64.const -1)))))

  ;; xxh128 of the $len bytes at $p: the 16-byte canonical digest at $out
  (func (export "xxh128") (param $p i32) (param $len i32) (param $out i32)
    (if (i32.le_u (local.get $len) (i32.const 16))
      (then (call $short (local.get $p) (local.get $len) (local.get $out)) (return)))
    (if (i32.le_u (local.get $len) (i32.const 240))
      (then (call $medium (local.get $p) (local.get $len) (local.get $out)) (return)))
    (call $long (local.get $p) (local.get $len) (local.get $out)))
)
