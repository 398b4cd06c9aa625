"""The dev MongoDB's set-up script (k8s/overlays/dev/mongodb-init.js), run by node against a
stand-in for what it asks of mongosh and mongod: every state a start can find (a fresh volume, a
set-up cut short at each step, a finished one, a member still loading its config) ends with the
set initiated, the root user and the shop's user with read-write on the functions' databases
only, and a second run changes nothing but the shop's password. No MongoDB can run here (see
README "Known limits"); what the stand-in does is MongoDB's documented behaviour: access control
with the localhost exception while no user exists, `db.auth` throwing on a wrong password,
`rs.initiate` refused as AlreadyInitialized once initiated, `getUser` answering null."""

import json
import shutil
import subprocess

import pytest

from tests.k8s.conftest import k8s_source
from tests.k8s.manifests import local_apps

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node runs the script")

ENV = {
    "MONGODB_ROOT_USERNAME": "root",
    "MONGODB_ROOT_PASSWORD": "root-secret",
    "MONGODB_APP_USERNAME": "shop",
    "MONGODB_APP_PASSWORD": "shop-secret",
    "SHOP_DB_PREFIX": "shop",
}

# The stand-in: one mongod's replica-set and user state, as one localhost connection sees it.
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const [scriptPath, startJson] = process.argv.slice(1);
const state = JSON.parse(startJson);
const fail = (codeName, message) => Object.assign(new Error(message || codeName), { codeName });
let signedIn = null, hellos = 0;
const noUsers = () => Object.keys(state.users).length === 0;
const isRoot = () => signedIn !== null && state.users[signedIn].roles.includes("root");
const mayAdminister = () => noUsers() || isRoot();  // the localhost exception, then the root only
const admin = {
  auth(user, pwd) {
    const found = state.users[user];
    if (!found || found.pwd !== pwd) throw fail("AuthenticationFailed", "Authentication failed.");
    signedIn = user;
    return { ok: 1 };
  },
  createUser(spec) {
    if (!mayAdminister()) throw fail("Unauthorized");
    if (state.users[spec.user]) throw fail("Location51003", `User "${spec.user}@admin" already exists`);
    state.users[spec.user] = { pwd: spec.pwd, roles: spec.roles };
    state.log.push(`createUser ${spec.user}`);
  },
  getUser(user) {
    if (!mayAdminister()) throw fail("Unauthorized");
    return state.users[user] ? { user } : null;
  },
  updateUser(user, spec) {
    if (!isRoot()) throw fail("Unauthorized");
    if (!state.users[user]) throw fail("UserNotFound");
    Object.assign(state.users[user], spec);
    state.log.push(`updateUser ${user}`);
  },
};
const db = {
  getSiblingDB(name) {
    if (name !== "admin") throw fail("UnexpectedDatabase", name);
    return admin;
  },
  hello() {
    hellos += 1;
    const loaded = state.initiated && hellos > state.loadingHellos;
    return { setName: loaded ? "rs0" : undefined, isWritablePrimary: loaded && hellos > state.electionHellos };
  },
};
const rs = {
  initiate(config) {
    if (!mayAdminister()) throw fail("Unauthorized");
    if (state.initiated) throw fail("AlreadyInitialized", "already initialized");
    state.initiated = true;
    state.config = config;
    state.log.push("initiate");
  },
};
const context = vm.createContext({ db, rs, sleep: () => {}, process: { env: state.env } });
try {
  vm.runInContext(fs.readFileSync(scriptPath, "utf8"), context);
  state.outcome = "ok";
} catch (e) {
  state.outcome = e.codeName || e.message;
}
process.stdout.write(JSON.stringify(state));
"""


def start(users: dict | None = None, initiated: bool = False, loading_hellos: int = 0, election_hellos: int = 2,
          env: dict | None = None) -> dict:
    return {"users": users or {}, "initiated": initiated, "loadingHellos": loading_hellos,
            "electionHellos": election_hellos, "env": {**ENV, **(env or {})}, "log": []}


def run(state: dict) -> dict:
    script = k8s_source() / "overlays" / "dev" / "mongodb-init.js"
    done = subprocess.run([NODE, "-e", HARNESS, str(script), json.dumps(state)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


ROOT = {"pwd": "root-secret", "roles": ["root"]}


def shop_user(pwd: str = "shop-secret") -> dict:
    return {"pwd": pwd, "roles": [{"role": "readWrite", "db": f"shop_{app}"} for app in local_apps()]}


def assert_set_up(state: dict, shop_password: str = "shop-secret") -> None:
    assert state["outcome"] == "ok", state
    assert state["initiated"]
    assert state["users"]["root"] == ROOT
    shop = state["users"]["shop"]
    assert shop["pwd"] == shop_password
    # Read-write on each function's database, nothing else: no admin role, no other database.
    assert sorted(shop["roles"], key=lambda r: r["db"]) == sorted(shop_user()["roles"], key=lambda r: r["db"])


def test_a_fresh_volume_gets_the_set_and_both_users():
    state = run(start())
    assert_set_up(state)
    assert state["log"] == ["initiate", "createUser root", "createUser shop"]
    assert state["config"] == {"_id": "rs0", "members": [{"_id": 0, "host": "mongodb-0.mongodb:27017"}]}


def test_a_restart_changes_nothing_but_the_shops_password():
    state = run(start({"root": ROOT, "shop": shop_user()}, initiated=True))
    assert_set_up(state)
    assert state["log"] == ["updateUser shop"]
    rotated = run(start({"root": ROOT, "shop": shop_user()}, initiated=True, env={"MONGODB_APP_PASSWORD": "new"}))
    assert_set_up(rotated, shop_password="new")


@pytest.mark.parametrize("users", [{}, {"root": ROOT}], ids=["before the root", "before the shop's user"])
def test_a_set_up_cut_short_is_finished(users):
    state = run(start(dict(users), initiated=True))
    assert_set_up(state)
    assert "initiate" not in state["log"]


def test_a_member_still_loading_its_config_is_not_initiated_twice():
    state = run(start({"root": ROOT, "shop": shop_user()}, initiated=True, loading_hellos=1))
    assert_set_up(state)
    assert state["log"] == ["updateUser shop"]


def test_a_root_password_that_is_not_the_roots_fails_the_hook():
    state = run(start({"root": ROOT, "shop": shop_user()}, initiated=True, env={"MONGODB_ROOT_PASSWORD": "other"}))
    assert state["outcome"] == "Unauthorized"
    assert state["users"]["shop"] == shop_user() and state["log"] == []
