#!/usr/bin/env python3
"""One HTTPS POST through a chosen libcurl build, loaded with ctypes:

    libcurl_post.py LIBCURL URL CA_PEM BODY

LIBCURL names the shared library (`libcurl-nss.so.4`: curl's NSS backend, the
curl of RHEL 7/8; `libcurl-gnutls.so.4`: Debian's GnuTLS flavour;
`libcurl.so.4`: OpenSSL). The TLS is libcurl's and its backend's: python's
own ssl module is not imported. Sends BODY as JSON with the bearer token in
$OPENAI_API_KEY, prints the answer, exit 0 on HTTP 200.
"""
import ctypes
import os
import sys

CURLOPT_URL = 10002
CURLOPT_POSTFIELDS = 10015
CURLOPT_POSTFIELDSIZE = 60
CURLOPT_HTTPHEADER = 10023
CURLOPT_CAINFO = 10065
CURLOPT_WRITEFUNCTION = 20011
CURLINFO_RESPONSE_CODE = 0x200002
CURL_GLOBAL_DEFAULT = 3

WRITE = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p)


def main() -> int:
    lib_name, url, ca, body = sys.argv[1:5]
    lib = ctypes.CDLL(lib_name)
    lib.curl_easy_init.restype = ctypes.c_void_p
    lib.curl_easy_setopt.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.curl_easy_perform.argtypes = [ctypes.c_void_p]
    lib.curl_easy_strerror.restype = ctypes.c_char_p
    lib.curl_slist_append.restype = ctypes.c_void_p
    lib.curl_slist_append.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.curl_easy_getinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.curl_global_init(CURL_GLOBAL_DEFAULT)
    h = lib.curl_easy_init()
    out = bytearray()

    @WRITE
    def write(ptr, size, n, _):
        out.extend(ctypes.string_at(ptr, size * n))
        return size * n

    headers = None
    for line in (f"Authorization: Bearer {os.environ.get('OPENAI_API_KEY', '')}",
                 "Content-Type: application/json"):
        headers = lib.curl_slist_append(headers, line.encode())
    data = body.encode()
    lib.curl_easy_setopt(h, CURLOPT_URL, ctypes.c_char_p(url.encode()))
    lib.curl_easy_setopt(h, CURLOPT_CAINFO, ctypes.c_char_p(ca.encode()))
    lib.curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers)
    lib.curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, ctypes.c_void_p(len(data)))
    lib.curl_easy_setopt(h, CURLOPT_POSTFIELDS, ctypes.c_char_p(data))
    lib.curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ctypes.cast(write, ctypes.c_void_p))
    rc = lib.curl_easy_perform(h)
    if rc != 0:
        print(f"libcurl_post: {lib.curl_easy_strerror(rc).decode()}", file=sys.stderr)
        return 1
    code = ctypes.c_long()
    lib.curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ctypes.byref(code))
    sys.stdout.write(out.decode(errors="replace") + "\n")
    return 0 if code.value == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
