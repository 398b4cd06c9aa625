package theshop.atomicmongo;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.util.List;
import java.util.concurrent.CountDownLatch;

/**
 * An in-memory Mongo-wire server on 127.0.0.1:PORT for the replica race.
 *
 * <p>The server itself answers hello with wire version 7 (MongoDB 4.0), which pymongo 4 refuses;
 * it is announced as 6.0 (wire 17), the oldest pymongo accepts. The shop uses no command that
 * 6.0 has and the server lacks.
 */
public final class Main {
    private static final MongoVersion ANNOUNCED = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(6, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 17;
        }
    };

    private Main() {}

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 1) {
            System.err.println("usage: Main <port>  (listens on 127.0.0.1 only)");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        MongoServer server = new MongoServer(new MemoryBackend().version(ANNOUNCED));
        server.bind("127.0.0.1", port);
        System.out.println("atomic-mongo listening on 127.0.0.1:" + port);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdownNow();
            stopped.countDown();
        }));
        stopped.await();
    }
}
