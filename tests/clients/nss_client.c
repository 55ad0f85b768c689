/*
 * nss_client.c — an HTTPS client on NSS that does its I/O the way Firefox
 * does: PR_Write / PR_Read on a layered descriptor, with a layer of its own
 * pushed on top of NSS's SSL layer (Firefox's nsSSLIOLayer sits there), so
 * the descriptor the application holds is not the SSL layer itself.
 *
 *   nss_client HOST PORT NSSDB REQUEST_FILE...
 *
 * Sends each request file's bytes, in order, over ONE TLS connection, and
 * after each reads one HTTP/1.1 response (headers, then Content-Length body
 * bytes) and prints it to stdout. NSSDB is an NSS certificate database
 * (`certutil -N` / `certutil -A -t C,,` with the test CA); the server's
 * certificate is verified against it for HOST. Exit 0 when every response
 * came back.
 *
 * With NSS_CLIENT_PAUSED and NSS_CLIENT_GO set (two paths), it creates the
 * first file after the handshake and waits for the second before any I/O:
 * a test can attach aitrail to a process whose SSL socket already exists.
 *
 * aitrail's end-to-end tests compile it (cc … $(pkg-config --cflags --libs
 * nss)); Debian: libnss3-dev.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nss.h>
#include <prerror.h>
#include <prio.h>
#include <prnetdb.h>
#include <ssl.h>

static PRDescIdentity app_layer_id;
static PRIOMethods app_methods;

/* The application's layer: passes everything down, as a logging or
 * accounting layer would. */
static PRInt32 app_write(PRFileDesc *fd, const void *buf, PRInt32 n)
{
    return fd->lower->methods->write(fd->lower, buf, n);
}

static PRInt32 app_read(PRFileDesc *fd, void *buf, PRInt32 n)
{
    return fd->lower->methods->read(fd->lower, buf, n);
}

static void die(const char *what)
{
    PRErrorCode e = PR_GetError();
    fprintf(stderr, "nss_client: %s: %s (%d)\n", what, PR_ErrorToName(e), e);
    exit(1);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Reads one HTTP/1.1 response with a Content-Length into stdout. */
static void read_response(PRFileDesc *fd)
{
    static char buf[1 << 20];
    size_t have = 0;
    long body = -1;
    size_t head = 0;
    for (;;) {
        if (have == sizeof buf)
            die("response too large");
        /* Small reads: a response comes back over several PR_Read calls. */
        PRInt32 n = PR_Read(fd, buf + have, 512);
        if (n < 0)
            die("PR_Read");
        if (n == 0)
            break;
        have += (size_t)n;
        if (body < 0) {
            char *end = memmem(buf, have, "\r\n\r\n", 4);
            if (end) {
                head = (size_t)(end - buf) + 4;
                char *cl = memmem(buf, head, "Content-Length:", 15);
                if (!cl)
                    cl = memmem(buf, head, "content-length:", 15);
                body = cl ? strtol(cl + 15, NULL, 10) : 0;
            }
        }
        if (body >= 0 && have >= head + (size_t)body)
            break;
    }
    fwrite(buf, 1, have, stdout);
    fputs("\n", stdout);
    if (body < 0 || have < head + (size_t)body)
        die("short response");
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: nss_client HOST PORT NSSDB REQUEST_FILE...\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    if (NSS_Init(argv[3]) != SECSuccess)
        die("NSS_Init");
    NSS_SetDomesticPolicy();

    /* HOST is an IPv4 literal (the tests' server is on 127.0.0.1). */
    PRNetAddr addr;
    if (PR_StringToNetAddr(host, &addr) != PR_SUCCESS || addr.raw.family != PR_AF_INET)
        die("HOST must be an IPv4 address");
    addr.inet.port = PR_htons((PRUint16)port);

    PRFileDesc *tcp = PR_NewTCPSocket();
    if (!tcp)
        die("PR_NewTCPSocket");
    PRFileDesc *fd = SSL_ImportFD(NULL, tcp);
    if (!fd)
        die("SSL_ImportFD");
    SSL_OptionSet(fd, SSL_HANDSHAKE_AS_CLIENT, PR_TRUE);
    SSL_SetURL(fd, host);

    app_layer_id = PR_GetUniqueIdentity("aitrail-test-app-layer");
    app_methods = *PR_GetDefaultIOMethods();
    app_methods.write = app_write;
    app_methods.read = app_read;
    PRFileDesc *layer = PR_CreateIOLayerStub(app_layer_id, &app_methods);
    if (!layer || PR_PushIOLayer(fd, PR_TOP_IO_LAYER, layer) != PR_SUCCESS)
        die("PR_PushIOLayer");

    if (PR_Connect(fd, &addr, PR_SecondsToInterval(10)) != PR_SUCCESS)
        die("PR_Connect");
    if (SSL_ForceHandshake(fd) != SECSuccess)
        die("handshake");

    const char *paused = getenv("NSS_CLIENT_PAUSED");
    const char *go = getenv("NSS_CLIENT_GO");
    if (paused && go) {
        FILE *f = fopen(paused, "w");
        if (!f) {
            perror(paused);
            return 1;
        }
        fclose(f);
        for (int i = 0; access(go, F_OK) != 0; i++) {
            if (i > 6000) {
                fprintf(stderr, "nss_client: %s never came\n", go);
                return 1;
            }
            usleep(10000);
        }
    }

    for (int i = 4; i < argc; i++) {
        size_t len;
        char *req = slurp(argv[i], &len);
        size_t off = 0;
        while (off < len) {
            PRInt32 n = PR_Write(fd, req + off, (PRInt32)(len - off));
            if (n <= 0)
                die("PR_Write");
            off += (size_t)n;
        }
        free(req);
        read_response(fd);
    }
    PR_Close(fd);
    NSS_Shutdown();
    return 0;
}
