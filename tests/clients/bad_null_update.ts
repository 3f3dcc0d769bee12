// Must not compile: an update's fields are optional, not nullable (null is a 422).
import createClient from "openapi-fetch";
import type { paths } from "./teamhub";

const api = createClient<paths>({ baseUrl: "/" });
await api.POST("/api/rx/agents.update", {
  body: { id: "00000000-0000-0000-0000-000000000000", data: { systemPrompt: null } }, // ERROR
});
