// What docs/api.md shows an SPA or a script doing, type-checked (tsc --strict)
// against the types openapi-typescript generates from the live document
// (tests/system/test_openapi_tools.py writes them to ./teamhub.d.ts next to this file).
import createClient from "openapi-fetch";
import type { components, paths } from "./teamhub";

type Schemas = components["schemas"];
type Agent = Schemas["AgentOut"];
type AgentDetail = Schemas["AgentDetailOut"];
type ApiError = Schemas["ApiError"];

function fail(error: ApiError): never {
  const fields = (error.error.fields ?? []).map((f) => `${f.field}: ${f.message}`);
  throw new Error(`${error.error.code}: ${error.error.message} ${fields.join("; ")}`);
}

// A script: an API token, no CSRF.
export function withToken(baseUrl: string, token: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

// A browser on the same site: the session cookie, and the CSRF header on unsafe requests.
export async function withSession(username: string, password: string) {
  const csrf = () => document.cookie.match(/csrftoken=([^;]+)/)?.[1] ?? "";
  const api = createClient<paths>({ baseUrl: "/", credentials: "same-origin" });
  api.use({
    onRequest({ request }) {
      if (request.method !== "GET") request.headers.set("X-CSRFToken", csrf());
      return request;
    },
  });
  const anonymous = await api.GET("/api/auth/me"); // 401, and the csrftoken cookie
  if (anonymous.response.status !== 401 && anonymous.data) return api;
  const { data, error } = await api.POST("/api/auth/login", { body: { username, password } });
  if (error) fail(error);
  const who: string = data.user.username;
  const staff: boolean = data.user.isStaff;
  console.log(who, staff);
  return api;
}

type Api = ReturnType<typeof withToken>;

export async function everyQuery(api: Api, organizationId: string, agentId: string) {
  const orgs = await api.GET("/api/rx/organizations.getAll");
  if (orgs.error) fail(orgs.error);
  const role: string = orgs.data.data[0].role;
  const cache = orgs.response.headers.get("X-Reactive-Cache"); // "hit" | "miss"

  const org = await api.GET("/api/rx/organizations.getOne", {
    params: { query: { id: organizationId } },
  });
  const hasUrl: boolean | undefined = org.data?.data.hasDatabaseUrl;

  const agents = await api.GET("/api/rx/agents.getAll", {
    params: { query: { organizationId, limit: 20 } },
  });
  if (agents.error) fail(agents.error);
  const list: Agent[] = agents.data.data;
  const tags: string[] = agents.data.tags;
  const cursor: string = agents.data.cursor;
  const key: string = agents.data.key;

  // The same query as POST with a JSON body (limit optional, a number).
  const posted = await api.POST("/api/rx/agents.getAll", { body: { organizationId } });
  const again: Agent[] | undefined = posted.data?.data;

  const one = await api.GET("/api/rx/agents.getOne", { params: { query: { id: agentId } } });
  const toolIds: string[] | undefined = one.data?.data.toolIds;
  const maxTokens: number | null | undefined = one.data?.data.maxTokens;

  const tools = await api.GET("/api/rx/tools.getAll", { params: { query: { organizationId } } });
  const toolType: string | null | undefined = tools.data?.data[0]?.toolType;
  const tool = await api.GET("/api/rx/tools.getOne", { params: { query: { id: agentId } } });

  const messages = await api.GET("/api/rx/messages.getAll", {
    params: { query: { organizationId, agentId, limit: 5 } },
  });
  const content: string | undefined = messages.data?.data[0]?.content;

  return { role, cache, hasUrl, list, tags, cursor, key, again, toolIds, maxTokens, toolType, tool, content };
}

export async function mutations(api: Api, organizationId: string) {
  const created = await api.POST("/api/rx/agents.create", {
    body: { organizationId, name: "Atlas", role: "researcher", temperature: 0.2, toolIds: [] },
  });
  if (created.error) fail(created.error);
  const agent: AgentDetail = created.data.data;

  // Update: any of the fields, each optional; maxTokens may be null (no limit).
  const updated = await api.POST("/api/rx/agents.update", {
    body: { id: agent.id, data: { name: "Atlas" } },
  });
  if (updated.error) fail(updated.error);
  await api.POST("/api/rx/agents.update", {
    body: { id: agent.id, data: { maxTokens: null, isActive: false, modelSettings: { top_p: 1 } } },
  });

  const tool = await api.POST("/api/rx/tools.create", {
    body: { organizationId, name: "search", config: { timeout: 20 } },
  });
  if (tool.error) fail(tool.error);
  await api.POST("/api/rx/tools.update", {
    body: { id: tool.data.data.id, data: { description: "web search", toolType: null } },
  });

  const message = await api.POST("/api/rx/messages.create", {
    body: { organizationId, fromAgentId: agent.id, content: "hello", toAgentId: null },
  });
  const sent: string | undefined = message.data?.data.createdAt;

  const org = await api.POST("/api/rx/organizations.create", {
    body: { name: "Research", databaseName: "research_db" },
  });
  if (org.response.status === 409) console.log("taken");

  const deleted = await api.POST("/api/rx/agents.delete", { body: { id: agent.id } });
  const gone: boolean | undefined = deleted.data?.data.deleted;
  await api.POST("/api/rx/tools.delete", { body: { id: tool.data.data.id } });
  return { sent, gone, org: org.data?.data.id };
}

export async function rest(api: Api, organizationId: string) {
  const listed = await api.GET("/api/agents", { params: { query: { organizationId } } });
  const bare: Agent[] | undefined = listed.data; // no envelope
  const created = await api.POST("/api/agents", {
    body: { organizationId, name: "Rex", role: "helper" },
  });
  if (created.error) fail(created.error);
  const item_id = created.data.id;
  const got = await api.GET("/api/agents/{item_id}", { params: { path: { item_id } } });
  const patched = await api.PATCH("/api/agents/{item_id}", {
    params: { path: { item_id } },
    body: { name: "Rex II" },
  });
  const name: string | undefined = patched.data?.name;
  await api.DELETE("/api/agents/{item_id}", { params: { path: { item_id } } });

  const tools = await api.GET("/api/tools", { params: { query: { organizationId, limit: 10 } } });
  const tool = await api.POST("/api/tools", { body: { organizationId, name: "calc" } });
  if (tool.data) {
    const path = { item_id: tool.data.id };
    await api.GET("/api/tools/{item_id}", { params: { path } });
    await api.PATCH("/api/tools/{item_id}", { params: { path }, body: { config: {} } });
    await api.DELETE("/api/tools/{item_id}", { params: { path } });
  }

  const orgs = await api.GET("/api/organizations");
  const mine: string | undefined = orgs.data?.[0]?.role;
  const org = await api.POST("/api/organizations", {
    body: { name: "Lab", databaseName: "lab", databaseUrl: "" },
  });
  const one = await api.GET("/api/organizations/{item_id}", {
    params: { path: { item_id: organizationId } },
  });
  return { bare, got: got.data?.id, name, tools: tools.data, mine, org: org.data, one: one.data };
}

// The real-time side: open the stream at a query's cursor, acknowledge what arrived.
export async function events(api: Api, organizationId: string, cursor: string) {
  const source = new EventSource(`/api/events?organizationId=${organizationId}&since=${cursor}`);
  source.addEventListener("invalidate", async (event) => {
    const { tags } = JSON.parse((event as MessageEvent<string>).data) as { tags: string[] };
    console.log(tags);
    const acked = await api.POST("/api/events/ack", {
      body: { eventId: (event as MessageEvent).lastEventId, clientId: "tab-1" },
    });
    const position: string | undefined = acked.data?.eventId;
    console.log(position);
  });
  await api.POST("/api/events/ack", { body: { eventId: 12 } }); // a number works too
  await api.POST("/api/auth/logout");
}
