// The dev MongoDB's set-up, run with mongosh over localhost by the container's postStart hook
// (mongodb.yaml) on every start: the one-member replica set, a root user, and the shop's user with
// read-write on the functions' databases only. Each step is skipped once done, so a restart
// changes nothing; the shop's user is updated from the Secret every time, so changing its password
// there changes it here at the next restart.
//
// mongod runs with access control (--keyFile). While it has no user at all, MongoDB's localhost
// exception lets this connection initiate the set and create the first user, the root; after
// that, every step runs as the root.
const env = process.env;
const admin = db.getSiblingDB("admin");
const FUNCTIONS = ["users", "products", "cart", "payments", "notifications"];

function signedInAsRoot() {
  try {
    return admin.auth(env.MONGODB_ROOT_USERNAME, env.MONGODB_ROOT_PASSWORD).ok === 1;
  } catch (e) {
    return false;
  }
}

let root = signedInAsRoot();
// hello needs no sign-in; a member still loading its set's config at start-up may not name it yet,
// and then initiating it again is refused as AlreadyInitialized.
if (!db.hello().setName) {
  try {
    rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongodb-0.mongodb:27017" }] });
  } catch (e) {
    // Unauthorized: users exist, but MONGODB_ROOT_PASSWORD is not the root's; the hook fails.
    if (e.codeName !== "AlreadyInitialized") throw e;
  }
}
for (let waited = 0; !db.hello().isWritablePrimary; waited += 500) {
  if (waited > 60000) throw new Error("rs0 has no writable primary after 60 s");
  sleep(500);
}
if (!root) {
  admin.createUser({ user: env.MONGODB_ROOT_USERNAME, pwd: env.MONGODB_ROOT_PASSWORD, roles: ["root"] });
  root = signedInAsRoot();
  if (!root) throw new Error("the root user was created but cannot sign in");
}
const shop = {
  pwd: env.MONGODB_APP_PASSWORD,
  roles: FUNCTIONS.map((name) => ({ role: "readWrite", db: `${env.SHOP_DB_PREFIX}_${name}` })),
};
if (admin.getUser(env.MONGODB_APP_USERNAME) === null) {
  admin.createUser({ user: env.MONGODB_APP_USERNAME, ...shop });
} else {
  admin.updateUser(env.MONGODB_APP_USERNAME, shop);
}
