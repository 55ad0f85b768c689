// JavaPost.java — one HTTPS POST with Java's own TLS (JSSE: no native TLS
// library), for aitrail's blind-spot test: a TLS stack aitrail does not hook.
//
//   java JavaPost.java URL CA_PEM BODY
//
// Trusts only the PEM CA given, sends BODY as JSON with the bearer token
// from $OPENAI_API_KEY, prints the answer; exit 0 on HTTP 200.
import java.io.FileInputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class JavaPost {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: java JavaPost.java URL CA_PEM BODY");
            System.exit(2);
        }
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        try (FileInputStream in = new FileInputStream(args[1])) {
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, tmf.getTrustManagers(), null);
        HttpClient client = HttpClient.newBuilder()
                .sslContext(tls)
                .version(HttpClient.Version.HTTP_1_1)
                .build();
        HttpRequest req = HttpRequest.newBuilder(URI.create(args[0]))
                .header("Authorization", "Bearer " + System.getenv("OPENAI_API_KEY"))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(args[2]))
                .build();
        HttpResponse<String> resp = client.send(req, HttpResponse.BodyHandlers.ofString());
        System.out.println(resp.body());
        System.exit(resp.statusCode() == 200 ? 0 : 1);
    }
}
